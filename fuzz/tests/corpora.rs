//! Every file of every kept corpus (`fuzz/corpus/<target>/`), run through
//! its target in this process: what the fuzzer kept, and every crash it
//! found and was fixed, stays checked by the test suite.

#![allow(clippy::expect_used)]

fn replay(name: &str) {
    let target = sargs_fuzz::target(name).expect("a target of that name");
    let corpus = target.corpus();
    let n = sargs_fuzz::replay(target, std::slice::from_ref(&corpus)).expect("replayed");
    assert!(n > 0, "{} holds no input", corpus.display());
}

macro_rules! corpora {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*

        #[test]
        fn every_target_has_its_test() {
            let tested = [$(stringify!($name)),*];
            for t in sargs_fuzz::TARGETS {
                assert!(tested.contains(&t.name), "no corpus test for {}", t.name);
            }
        }
    };
}

corpora!(
    command_envelope,
    command_payload,
    manifest,
    receipt,
    config,
    policy,
    age,
    dock_probe,
    hq_message,
);
