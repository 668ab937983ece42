//! An app's statistics as containerd's cgroup v2 metrics
//! (`io.containerd.cgroups.v2.Metrics`, what `ctr task metrics` decodes):
//! the app's own cgroup in the guest, not the VM's on the host.

use containerd_shim::protos::cgroups_v2::metrics::{
    CPUStat, MemoryEvents, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::MessageField;

use crate::hostctl::AppStats;

pub fn of(s: &AppStats) -> Metrics {
    Metrics {
        pids: MessageField::some(PidsStat {
            current: s.pids_current,
            ..Default::default()
        }),
        cpu: MessageField::some(CPUStat {
            usage_usec: s.cpu_usage_usec,
            ..Default::default()
        }),
        memory: MessageField::some(MemoryStat {
            usage: s.memory_current,
            max_usage: s.memory_peak,
            // cgroup v2's "max": no limit.
            usage_limit: s.memory_max.unwrap_or(u64::MAX),
            ..Default::default()
        }),
        memory_events: MessageField::some(MemoryEvents {
            oom_kill: s.oom_kills,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apps_cgroup_fills_the_v2_metrics() {
        let s = AppStats {
            app: "app".into(),
            memory_current: 10,
            memory_peak: 20,
            memory_max: None,
            cpu_usage_usec: 30,
            pids_current: 2,
            oom_kills: 1,
        };
        let m = of(&s);
        assert_eq!(m.memory.usage, 10);
        assert_eq!(m.memory.max_usage, 20);
        assert_eq!(m.memory.usage_limit, u64::MAX);
        assert_eq!(m.cpu.usage_usec, 30);
        assert_eq!(m.pids.current, 2);
        assert_eq!(m.memory_events.oom_kill, 1);
        let any = containerd_shim::util::convert_to_any(Box::new(m)).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
    }
}
