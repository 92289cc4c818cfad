//! Helpers shared by the end-to-end test files: running the `openssl`
//! binary, building a throwaway self-signed authority, writing an issued
//! chain to disk and reading certificate fields as openssl prints them.

pub(crate) mod agent;
pub(crate) mod ca;
pub(crate) mod proxy;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use sigil_ca::authority::source;
use sigil_ca::{CertIssuer, IssuancePolicy, IssueError, IssueRequest, IssuedChain};
use sigil_identity::{SpiffeId, TrustDomain};
use time::OffsetDateTime;

/// The trust domain every test issues for.
pub(crate) const TD: &str = "cluster.local";
/// The workload identity every test authorizes.
pub(crate) const ID: &str = "spiffe://cluster.local/ns/default/sa/web";

/// [`TD`] parsed.
pub(crate) fn td() -> TrustDomain {
    TrustDomain::new(TD).expect("trust domain")
}

/// [`ID`] parsed.
pub(crate) fn id() -> SpiffeId {
    SpiffeId::parse(ID).expect("SPIFFE ID")
}

/// A fresh temporary directory, removed when dropped.
pub(crate) fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create temp dir")
}

/// The result of one `openssl` run.
#[derive(Debug)]
pub(crate) struct Run {
    /// Whether the process exited with status 0.
    pub(crate) ok: bool,
    /// Its standard output.
    pub(crate) stdout: String,
    /// Its standard error.
    pub(crate) stderr: String,
}

/// Runs `openssl args...` in `dir` and returns what happened, whatever the
/// exit status. Fails the test (never skips it) if `openssl` is not
/// installed.
pub(crate) fn openssl_run(dir: &Path, args: &[&str]) -> Run {
    let output: Output = match Command::new("openssl").args(args).current_dir(dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "the `openssl` command line tool is required by these tests and was not found on PATH \
             (install the `openssl` package): {e}"
        ),
        Err(e) => panic!("cannot run `openssl {}`: {e}", args.join(" ")),
    };
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `openssl args...` in `dir`; fails the test with openssl's stderr
/// unless it succeeds. Returns stdout.
pub(crate) fn openssl(dir: &Path, args: &[&str]) -> String {
    let run = openssl_run(dir, args);
    assert!(
        run.ok,
        "`openssl {}` failed in {}:\n--- stderr ---\n{}\n--- stdout ---\n{}",
        args.join(" "),
        dir.display(),
        run.stderr,
        run.stdout
    );
    run.stdout
}

/// Writes `contents` to `dir/name` and returns the path.
pub(crate) fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Reads `dir/name`.
pub(crate) fn read(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Reads `dir/name` as text.
pub(crate) fn read_string(dir: &Path, name: &str) -> String {
    String::from_utf8(read(dir, name)).expect("UTF-8 file")
}

/// The permission bits of `path`.
pub(crate) fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    meta.permissions().mode() & 0o777
}

/// The names in `dir`, sorted.
pub(crate) fn dir_names(dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
    let mut names: Vec<String> = entries
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The DER certificates of a PEM file, in file order (parsed with
/// x509-parser's PEM reader, not the library's).
pub(crate) fn pem_file_ders(dir: &Path, name: &str) -> Vec<Vec<u8>> {
    let bytes = read(dir, name);
    x509_parser::pem::Pem::iter_from_buffer(&bytes)
        .map(|pem| pem.expect("PEM block").contents)
        .collect()
}

/// An RSA key made once per test binary with
/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048` (PKCS#8
/// PEM). RSA key generation is the slow part of these tests.
pub(crate) fn rsa2048_pkcs8() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempdir();
        openssl(
            dir.path(),
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "rsa.pem",
            ],
        );
        read_string(dir.path(), "rsa.pem")
    })
}

/// Creates a self-signed authority in `dir/ca` (which must not exist yet)
/// and an issuer with the default policy.
pub(crate) fn self_signed_issuer(dir: &Path) -> CertIssuer {
    let authority = source::create_self_signed(&dir.join("ca"), &td(), OffsetDateTime::now_utc())
        .expect("create self-signed CA");
    CertIssuer::new(Arc::new(authority), IssuancePolicy::default())
}

/// Issues for [`ID`] with the default lifetime.
pub(crate) fn issue(issuer: &CertIssuer, csr: &[u8]) -> Result<IssuedChain, IssueError> {
    issuer.issue(IssueRequest {
        csr,
        identity: &id(),
        ttl: None,
    })
}

/// Issues a CSR file from `dir` for [`ID`]; fails the test if refused.
pub(crate) fn issue_file(issuer: &CertIssuer, dir: &Path, csr_name: &str) -> IssuedChain {
    let csr = read(dir, csr_name);
    issue(issuer, &csr).unwrap_or_else(|e| panic!("{csr_name} was refused: {e}"))
}

/// Issues a CSR file from `dir` for [`ID`], expecting a refusal; fails the
/// test (showing the leaf) if anything was signed.
pub(crate) fn refusal(issuer: &CertIssuer, dir: &Path, csr_name: &str) -> IssueError {
    let csr = read(dir, csr_name);
    match issue(issuer, &csr) {
        Ok(chain) => panic!(
            "{csr_name} must be refused, but a certificate was signed:\n{}",
            chain.to_pem()
        ),
        Err(e) => e,
    }
}

/// Makes `dir/<out>`, a P-256 private key, with `openssl genpkey`.
pub(crate) fn openssl_p256_key(dir: &Path, out: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            out,
        ],
    );
}

/// Makes `dir/<out>` with `openssl req -new -key <key>`, an empty subject,
/// the URI SAN [`ID`] and `extra` options (e.g. `-sha1`, more `-addext`).
pub(crate) fn openssl_csr(dir: &Path, key: &str, out: &str, extra: &[&str]) {
    let san = format!("subjectAltName=URI:{ID}");
    let mut args = vec![
        "req", "-new", "-key", key, "-subj", "/", "-addext", &san, "-out", out,
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
}

/// Where [`write_chain`] put an issued chain.
#[derive(Debug)]
pub(crate) struct ChainFiles {
    /// `leaf.pem`.
    pub(crate) leaf: String,
    /// `chain.pem`: the certificates between the leaf and the root, if any.
    pub(crate) intermediates: Option<String>,
    /// `root.pem`: the last certificate of the chain.
    pub(crate) root: String,
}

/// Writes `leaf.pem`, `chain.pem` (intermediates, only when there are any)
/// and `root.pem` (the last element) into `dir`.
pub(crate) fn write_chain(dir: &Path, chain: &IssuedChain) -> ChainFiles {
    let pems = chain.pem_certs();
    assert!(
        pems.len() >= 2,
        "an issued chain has a leaf and a root at least"
    );
    write(dir, "leaf.pem", &pems[0]);
    write(dir, "root.pem", &pems[pems.len() - 1]);
    let middle = &pems[1..pems.len() - 1];
    let intermediates = (!middle.is_empty()).then(|| {
        write(dir, "chain.pem", middle.concat());
        "chain.pem".to_owned()
    });
    ChainFiles {
        leaf: "leaf.pem".to_owned(),
        intermediates,
        root: "root.pem".to_owned(),
    }
}

/// `openssl verify -x509_strict -CAfile <root> [-untrusted <chain>] <leaf>`
/// for the TLS server and client purposes; fails the test unless both
/// print `<leaf>: OK`.
pub(crate) fn assert_openssl_verifies(
    dir: &Path,
    root: &str,
    intermediates: Option<&str>,
    leaf: &str,
) {
    for purpose in ["sslserver", "sslclient"] {
        let mut args = vec![
            "verify",
            "-x509_strict",
            "-purpose",
            purpose,
            "-CAfile",
            root,
        ];
        if let Some(chain) = intermediates {
            args.extend(["-untrusted", chain]);
        }
        args.push(leaf);
        let out = openssl(dir, &args);
        assert_eq!(out.trim(), format!("{leaf}: OK"), "openssl verify output");
    }
}

/// Writes `chain` with [`write_chain`] and checks it with
/// [`assert_openssl_verifies`] against its own last element.
pub(crate) fn assert_chain_verifies(dir: &Path, chain: &IssuedChain) -> ChainFiles {
    let files = write_chain(dir, chain);
    assert_openssl_verifies(
        dir,
        &files.root,
        files.intermediates.as_deref(),
        &files.leaf,
    );
    files
}

/// `openssl x509 -text -noout -in <cert>`.
pub(crate) fn x509_text(dir: &Path, cert: &str) -> String {
    openssl(dir, &["x509", "-in", cert, "-noout", "-text"])
}

/// An extension as `openssl x509 -text` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TextExtension {
    /// Whether openssl printed `critical` after the name.
    pub(crate) critical: bool,
    /// The value lines, trimmed and joined with a newline.
    pub(crate) value: String,
}

/// Finds the extension whose printed name is `name` (e.g.
/// `X509v3 Key Usage`) in `openssl x509 -text` output. Asserts it appears
/// at most once.
pub(crate) fn extension(text: &str, name: &str) -> Option<TextExtension> {
    let lines: Vec<&str> = text.lines().collect();
    let header = format!("{name}:");
    let found: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with(&header))
        .map(|(i, _)| i)
        .collect();
    assert!(found.len() <= 1, "{name} appears {} times", found.len());
    let &at = found.first()?;
    let line = lines[at];
    let indent = line.len() - line.trim_start().len();
    let critical = line.trim_start()[header.len()..].trim() == "critical";
    let value = lines[at + 1..]
        .iter()
        .take_while(|l| l.len() - l.trim_start().len() > indent)
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join("\n");
    Some(TextExtension { critical, value })
}

/// The value of the first line `<label>: <value>` (trimmed) in openssl text
/// output, e.g. `Subject`.
pub(crate) fn field<'t>(text: &'t str, label: &str) -> Option<&'t str> {
    let prefix = format!("{label}:");
    text.lines()
        .map(str::trim_start)
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::trim)
}

/// The `serial=<hex>` printed by `openssl x509 -serial`.
pub(crate) fn serial_hex(dir: &Path, cert: &str) -> String {
    let out = openssl(dir, &["x509", "-in", cert, "-noout", "-serial"]);
    out.trim()
        .strip_prefix("serial=")
        .unwrap_or_else(|| panic!("unexpected -serial output {out:?}"))
        .to_owned()
}

/// Whether `openssl x509 -checkend <seconds>` says the certificate is still
/// valid `seconds` from now.
pub(crate) fn valid_in(dir: &Path, cert: &str, seconds: i64) -> bool {
    let secs = seconds.to_string();
    let run = openssl_run(dir, &["x509", "-in", cert, "-noout", "-checkend", &secs]);
    match run.stdout.trim() {
        "Certificate will not expire" => true,
        "Certificate will expire" => false,
        other => panic!("unexpected -checkend output {other:?}: {}", run.stderr),
    }
}

/// The public key of a certificate (`openssl x509 -pubkey`) or request
/// (`openssl req -pubkey`), PEM.
pub(crate) fn public_key_of(dir: &Path, kind: &str, file: &str) -> String {
    openssl(dir, &[kind, "-in", file, "-noout", "-pubkey"])
}
