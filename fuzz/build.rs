//! Declares the `fuzzing` cfg that `cargo afl build` sets, so that plain
//! builds do not warn about it.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
}
