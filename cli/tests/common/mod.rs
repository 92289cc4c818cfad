//! Helpers shared by the `sigil` binary's test files.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Lossy UTF-8 of a process's output.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `sigil <args>` in `cwd` with only `vars` in its environment, expected to
/// exit on its own (refusing its configuration before serving anything).
/// A daemon that starts anyway is killed after 30 s and the test fails
/// rather than hangs.
pub(crate) fn sigil_refusing(args: &[&str], vars: &[(&str, &str)], cwd: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(vars.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sigil");
    let deadline = Instant::now() + Duration::from_secs(30);
    // A watchdog, not synchronisation: the exit is what the test awaits.
    while child.try_wait().expect("wait for sigil").is_none() {
        if Instant::now() > deadline {
            child.kill().expect("kill sigil");
            let out = child.wait_with_output().expect("sigil output");
            panic!(
                "`sigil {args:?}` with {vars:?} did not refuse its configuration: {}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("sigil output")
}
