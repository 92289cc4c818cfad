//! py-spiffe (the PyPI package `spiffe`, grpc C-core underneath) as a
//! third-party Workload API client in tests.

/// Whether a py-spiffe test should run: `true` when `python3 -c 'import
/// spiffe'` works. Otherwise it prints why the test `name` is skipped and
/// returns `false`, unless `SIGIL_REQUIRE_PY_SPIFFE` is set (CI installs
/// py-spiffe and sets it), where a missing client fails the test.
pub fn py_spiffe_or_skip(name: &str) -> bool {
    let reason = match std::process::Command::new("python3")
        .args(["-c", "import spiffe"])
        .output()
    {
        Ok(out) if out.status.success() => return true,
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        Err(e) => format!("python3 cannot run: {e}"),
    };
    assert!(
        std::env::var_os("SIGIL_REQUIRE_PY_SPIFFE").is_none(),
        "SIGIL_REQUIRE_PY_SPIFFE is set but `import spiffe` failed: {reason}"
    );
    eprintln!("SKIPPED {name}: `python3 -c 'import spiffe'` failed: {reason}");
    false
}
