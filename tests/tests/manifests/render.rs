//! Rendering: which kubectl binaries to use, a scratch copy of deploy/ with
//! a generated plug-in CA in the plugin-ca overlay, `kubectl kustomize`, and
//! the multi-document YAML it prints.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;
use sigil_test_util::TestCa;

use crate::configs::PLUGIN_FILES;

/// Every kustomization under deploy/ (the test fails if one is added and
/// not listed here).
pub(crate) const TARGETS: &[&str] = &[
    "base",
    "overlays/dev",
    "overlays/production",
    "overlays/plugin-ca",
    "examples/httpbin",
];

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The kubectl binaries to render with: `SIGIL_KUBECTL` (`:`-separated),
/// else `kubectl` on PATH. Empty when none runs, after saying so loudly;
/// with `SIGIL_REQUIRE_KUBECTL=1` that is a failure instead. A binary named
/// in `SIGIL_KUBECTL` that does not run is always a failure.
pub(crate) fn kubectls() -> Vec<(String, String)> {
    let listed = std::env::var("SIGIL_KUBECTL")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let candidates: Vec<String> = match &listed {
        Some(list) => list
            .split(':')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        None => vec!["kubectl".to_owned()],
    };
    let mut found = Vec::new();
    for kubectl in candidates {
        match Command::new(&kubectl)
            .args(["version", "--client"])
            .output()
        {
            Ok(out) if out.status.success() => {
                let version = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                found.push((kubectl, version));
            }
            result => {
                assert!(
                    listed.is_none(),
                    "SIGIL_KUBECTL names {kubectl}, which does not run: {result:?}"
                );
            }
        }
    }
    if found.is_empty() {
        let require = std::env::var("SIGIL_REQUIRE_KUBECTL").is_ok_and(|v| v == "1");
        assert!(
            !require,
            "SIGIL_REQUIRE_KUBECTL=1 but no kubectl runs (set SIGIL_KUBECTL or install kubernetes-client)"
        );
        eprintln!(
            "\n!!!!! SKIPPED: no kubectl on PATH: the Kubernetes manifests were NOT checked. \
             Install one (apt-get install kubernetes-client) or set SIGIL_KUBECTL. !!!!!\n"
        );
    }
    found
}

/// A scratch copy of deploy/, with a throwaway plug-in CA written into
/// overlays/plugin-ca (never committed: the operator's files go there).
pub(crate) struct Scratch {
    _dir: tempfile::TempDir,
    pub(crate) deploy: PathBuf,
    /// The plug-in CA's root, DER.
    pub(crate) plugin_root_der: Vec<u8>,
}

pub(crate) fn scratch() -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let deploy = dir.path().join("deploy");
    copy_dir(&repo().join("deploy"), &deploy);
    let root = TestCa::root("cluster.local");
    let intermediate = root.intermediate("sigil plug-in intermediate");
    let contents = [
        intermediate.cert.pem.clone(),
        intermediate.cert.key.serialize_pem(),
        format!("{}{}", intermediate.cert.pem, root.cert.pem),
        root.cert.pem.clone(),
    ];
    for (name, text) in PLUGIN_FILES.iter().zip(contents) {
        std::fs::write(deploy.join("overlays/plugin-ca").join(name), text).unwrap();
    }
    Scratch {
        _dir: dir,
        deploy,
        plugin_root_der: root.cert.der.to_vec(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every directory under `deploy` holding a kustomization.yaml, relative.
pub(crate) fn kustomizations(deploy: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        if dir.join("kustomization.yaml").exists() {
            out.push(dir.strip_prefix(root).unwrap().display().to_string());
        }
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                walk(root, &entry.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(deploy, deploy, &mut out);
    out.sort();
    out
}

/// `kubectl kustomize dir`, parsed.
pub(crate) fn render(kubectl: &str, dir: &Path) -> Result<Vec<Value>, String> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| format!("{kubectl}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{kubectl} kustomize {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Multi-document YAML to JSON values (empty documents dropped).
pub(crate) fn parse(yaml: &str) -> Result<Vec<Value>, String> {
    let mut values = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let value = Value::deserialize(document).map_err(|e| format!("document {i}: {e}"))?;
        if !value.is_null() {
            values.push(value);
        }
    }
    Ok(values)
}
