//! Generates the agent protocol's Rust code (messages and async ttrpc
//! service) from `proto/agent.proto` at build time. The generator is pure
//! Rust, so no `protoc` is needed.

use std::fs;
use std::path::Path;

use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

fn main() {
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    println!("cargo:rerun-if-changed=proto/agent.proto");
    Codegen::new()
        .out_dir(&out_dir)
        .inputs(["proto/agent.proto"])
        .include("proto")
        .rust_protobuf()
        .customize(Customize {
            async_all: true,
            ..Default::default()
        })
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .run()
        .expect("generating the ttrpc code for proto/agent.proto failed");

    // The generated files open with inner attributes (`#![...]`), which
    // `include!` cannot take; the crate sets its own lint levels instead.
    for name in ["agent.rs", "agent_ttrpc.rs"] {
        let path = Path::new(&out_dir).join(name);
        let text = fs::read_to_string(&path).expect("generated file is readable");
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| !line.starts_with("#![") && !line.starts_with("//!"))
            .collect();
        fs::write(&path, kept.join("\n")).expect("generated file is writable");
    }
}
