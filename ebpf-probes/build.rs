//! Compiles the BPF probe with clang into OUT_DIR; the loader embeds the object, so a plain
//! `cargo build` needs clang and libbpf-dev and nothing else.

#[path = "build/compile.rs"]
mod compile;

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("fileopen.bpf.o");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    for src in compile::SOURCES {
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-changed=build/compile.rs");
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=LIBBPF_INCLUDE");
    if let Err(err) = compile::compile(&dir, &arch, &out) {
        eprintln!("error: splitscope-probes: {err}");
        std::process::exit(1);
    }
}
