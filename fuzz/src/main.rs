//! `sargs-fuzz`: one binary for every fuzz target.
//!
//! ```text
//! sargs-fuzz list                   the targets: timeout, dictionary, what each covers
//! sargs-fuzz seeds [DIR]            writes the seed corpora (default fuzz/corpus)
//! sargs-fuzz TARGET [FILE|DIR…]     built by `cargo afl build`: the fuzzer's target;
//!                                   built as usual: runs each file through TARGET
//!                                   (default: its corpus), a panic exits non-zero
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("list") => {
            for t in sargs_fuzz::TARGETS {
                let dict = t.dictionary.unwrap_or("-");
                println!("{}\t{}\t{dict}\t{}", t.name, t.timeout_ms, t.covers);
            }
            ExitCode::SUCCESS
        }
        Some("seeds") => {
            let dir = args
                .get(1)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));
            match sargs_fuzz::seeds::write_all(&dir) {
                Ok(n) => {
                    println!("{n} seeds written under {}", dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sargs-fuzz seeds: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(name) => match sargs_fuzz::target(name) {
            Some(target) => run(target, &args[1..]),
            None => {
                eprintln!("sargs-fuzz: no target {name:?} (`sargs-fuzz list`)");
                ExitCode::from(2)
            }
        },
        None => {
            eprintln!("usage: sargs-fuzz list | seeds [DIR] | TARGET [FILE|DIR…]");
            ExitCode::from(2)
        }
    }
}

#[cfg(fuzzing)]
fn run(target: &sargs_fuzz::Target, _files: &[String]) -> ExitCode {
    match target.harness() {
        Ok(h) => {
            sargs_fuzz::fuzz(h);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sargs-fuzz {}: {e}", target.name);
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(fuzzing))]
fn run(target: &sargs_fuzz::Target, files: &[String]) -> ExitCode {
    let paths: Vec<PathBuf> = if files.is_empty() {
        vec![target.corpus()]
    } else {
        files.iter().map(PathBuf::from).collect()
    };
    match sargs_fuzz::replay(target, &paths) {
        Ok(n) => {
            println!("{}: {n} inputs, no crash", target.name);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sargs-fuzz {}: {e}", target.name);
            ExitCode::FAILURE
        }
    }
}
