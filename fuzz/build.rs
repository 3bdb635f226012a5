//! Declares the `fuzzing` cfg that `cargo afl build` sets, so that plain
//! builds do not warn about it. Run again only when it changes (not at every
//! change of the corpora beside it).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
    println!("cargo::rerun-if-changed=build.rs");
}
