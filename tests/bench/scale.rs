//! Figure 8, scale: pod setup cost as volumes and apps grow, as guest time
//! from the agent's start to every app started, with the kernel's start to
//! /init beside it (more volumes mean more devices for the kernel to probe).

use anyhow::Result;
use serde_json::{json, Value};

use crate::ctx::{runs, stamp, stamps_with_prefix, Ctx};
use crate::report::Report;
use crate::stats::Figure;

/// (volumes, apps) of the pods measured: a small pod and a large one.
const SHAPES: [(usize, usize); 2] = [(8, 2), (64, 16)];

pub fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    for (volumes, apps) in SHAPES {
        let manifest = ctx.write_manifest(
            &format!("scale-{volumes}x{apps}"),
            &manifest(ctx, volumes, apps)?,
        )?;
        let mut setup = Vec::new();
        let mut boot = Vec::new();
        for _ in 0..3.min(runs()) {
            let (_, rec, _) = ctx.run_attached(&manifest)?;
            let start = stamp(&rec, "init").unwrap_or(f64::NAN);
            let last = stamps_with_prefix(&rec, "app-started:")
                .into_iter()
                .fold(f64::NAN, f64::max);
            setup.push((last - start) * 1000.0);
            boot.push(start);
        }
        let name = format!("{volumes} volumes × {apps} apps: agent start → all apps started");
        let f = Figure::of(&name, "ms", &setup);
        let f = if volumes == 64 {
            f.target(100.0, false)
        } else {
            f
        };
        report.add("scale", f);
        report.add(
            "scale",
            Figure::of(
                &format!("{volumes} volumes × {apps} apps: kernel start → /init"),
                "s",
                &boot,
            ),
        );
    }
    report
        .notes
        .push("64 volumes: 32 host volumes on 9p devices behind PCIe-to-PCI bridges, 32 empty volumes on tmpfs".into());
    Ok(())
}

/// A pod of `apps` apps that each mount all `volumes` volumes and exit;
/// half the volumes are host directories (9p), half empty (tmpfs).
pub fn manifest(ctx: &Ctx, volumes: usize, apps: usize) -> Result<Value> {
    let mut vols = Vec::new();
    for v in 0..volumes {
        if v % 2 == 0 {
            let d = ctx.host_dir(&format!("scale-{volumes}-{v}"))?;
            vols.push(json!({"name": format!("v{v}"), "kind": "host", "source": d}));
        } else {
            vols.push(json!({"name": format!("v{v}"), "kind": "empty"}));
        }
    }
    let mounts: Vec<Value> = (0..volumes)
        .map(|v| json!({"volume": format!("v{v}"), "path": format!("/vol/{v}")}))
        .collect();
    let app_list: Vec<Value> = (0..apps)
        .map(|a| json!({"name": format!("a{a}"), "rootfs": ctx.rootfs, "exec": ["/bin/true"], "mountPoints": mounts}))
        .collect();
    Ok(json!({"volumes": vols, "apps": app_list}))
}
