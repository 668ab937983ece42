//! An interface's byte and packet counters, from sysfs (what `ip -s link`
//! shows), for `stats`.

use std::path::Path;

/// Received and sent bytes and packets, and drops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub interface: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// The counters of every interface but `lo`.
pub fn counters() -> Vec<Counters> {
    counters_in(Path::new("/sys/class/net"))
}

fn counters_in(root: &Path) -> Vec<Counters> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<Counters> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name != "lo")
        .map(|name| {
            let stats = root.join(&name).join("statistics");
            let read = |f: &str| {
                std::fs::read_to_string(stats.join(f))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0)
            };
            Counters {
                rx_bytes: read("rx_bytes"),
                rx_packets: read("rx_packets"),
                rx_dropped: read("rx_dropped"),
                tx_bytes: read("tx_bytes"),
                tx_packets: read("tx_packets"),
                tx_dropped: read("tx_dropped"),
                interface: name,
            }
        })
        .collect();
    out.sort_by(|a, b| a.interface.cmp(&b.interface));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_per_interface_without_lo() {
        let dir = tempfile::tempdir().unwrap();
        for (name, rx) in [("lo", "1"), ("eth0", "1234\n")] {
            let s = dir.path().join(name).join("statistics");
            std::fs::create_dir_all(&s).unwrap();
            std::fs::write(s.join("rx_bytes"), rx).unwrap();
            std::fs::write(s.join("tx_packets"), "7").unwrap();
        }
        let c = counters_in(dir.path());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].interface, "eth0");
        assert_eq!(
            (c[0].rx_bytes, c[0].tx_packets, c[0].rx_packets),
            (1234, 7, 0)
        );
    }
}
