//! Where CA material comes from: a directory in Istio's or cert-manager's
//! layout, or a self-signed root created on first start.
//!
//! | layout        | signing cert  | key          | chain (optional) | roots           |
//! |---------------|---------------|--------------|------------------|-----------------|
//! | Istio         | `ca-cert.pem` | `ca-key.pem` | `cert-chain.pem` | `root-cert.pem` |
//! | cert-manager  | `tls.crt` (first) | `tls.key` | rest of `tls.crt` | `ca.crt`      |
//!
//! A self-signed CA is written in Istio's layout, so the directory it creates
//! is also valid plug-in material and the same loader reads it on restart.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sigil_identity::TrustDomain;
use sigil_runtime::fs::{PUBLIC_FILE_MODE, SECRET_FILE_MODE, create_private_dir, write_atomic};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use super::{Authority, AuthorityError, CaKey, KeyFileWarning, Material, SourcedCert, file, probe};
use crate::serial::random_serial;

/// Istio's signing certificate file.
pub const ISTIO_CA_CERT: &str = "ca-cert.pem";
/// Istio's signing key file.
pub const ISTIO_CA_KEY: &str = "ca-key.pem";
/// Istio's chain file (signing certificate up to the root).
pub const ISTIO_CERT_CHAIN: &str = "cert-chain.pem";
/// Istio's root file.
pub const ISTIO_ROOT_CERT: &str = "root-cert.pem";
/// cert-manager's certificate file (signing certificate first).
pub const CM_TLS_CRT: &str = "tls.crt";
/// cert-manager's key file.
pub const CM_TLS_KEY: &str = "tls.key";
/// cert-manager's CA file.
pub const CM_CA_CRT: &str = "ca.crt";

/// The largest CA file read (certificates and keys are far smaller).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Validity of a generated self-signed root: ten years.
pub const SELF_SIGNED_VALIDITY: Duration = Duration::days(3650);

/// The common name of a generated self-signed root, before its key id:
/// `Sigil root CA 1f2e3d4c5b6a7980`.
pub const ROOT_CN_PREFIX: &str = "Sigil root CA ";

/// A directory layout of plug-in CA files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// cert-manager's `tls.crt`, `tls.key`, `ca.crt`.
    CertManager,
    /// Istio's `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`, `root-cert.pem`.
    Istio,
}

impl Layout {
    /// Detects the layout of `dir`; Istio's wins when both are present, as
    /// in Istio's own `cacerts` handling.
    pub fn detect(dir: &Path) -> Result<Self, AuthorityError> {
        if file(dir, ISTIO_CA_CERT).exists() {
            Ok(Self::Istio)
        } else if file(dir, CM_TLS_CRT).exists() {
            Ok(Self::CertManager)
        } else {
            Err(AuthorityError::UnknownLayout {
                dir: dir.to_path_buf(),
            })
        }
    }
}

/// Loads plug-in CA material from `dir` (layout detected) and validates it
/// at `now`.
pub fn load_dir(
    dir: &Path,
    trust_domain: &TrustDomain,
    now: OffsetDateTime,
) -> Result<Authority, AuthorityError> {
    let material = read_material(dir, Layout::detect(dir)?)?;
    let key_path = material.key_path.clone();
    let mut authority = Authority::from_material(trust_domain.clone(), material, now)?;
    probe::self_test(&authority, now)?;
    authority.key_file_warnings = key_file_warning(&key_path).into_iter().collect();
    for warning in &authority.key_file_warnings {
        tracing::warn!(
            file = %warning.path.display(),
            mode = %format_args!("{:04o}", warning.mode),
            "{warning}"
        );
    }
    Ok(authority)
}

/// A [`KeyFileWarning`] if group or others may read `path` (after
/// following symlinks, as a Secret volume's `..data` links are).
pub fn key_file_warning(path: &Path) -> Option<KeyFileWarning> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then(|| KeyFileWarning {
        path: path.to_path_buf(),
        mode,
    })
}

/// Loads the CA in `dir` if there is one, otherwise creates a self-signed
/// root there (ECDSA P-256, ten years). Returns the authority and whether
/// it was created.
pub fn load_or_create_self_signed(
    dir: &Path,
    trust_domain: &TrustDomain,
    now: OffsetDateTime,
) -> Result<(Authority, bool), AuthorityError> {
    match Layout::detect(dir) {
        Ok(_) => load_dir(dir, trust_domain, now).map(|a| (a, false)),
        Err(AuthorityError::UnknownLayout { .. }) => {
            create_self_signed(dir, trust_domain, now).map(|a| (a, true))
        }
        Err(e) => Err(e),
    }
}

/// Creates a self-signed root CA in `dir`, which must be absent or empty.
///
/// The files are written into a fresh sibling directory which is then
/// renamed onto `dir` in one step, so a crash leaves either no CA or a
/// complete one, and two processes racing to create it cannot mix their
/// files: the loser's rename fails and it loads the winner's CA.
pub fn create_self_signed(
    dir: &Path,
    trust_domain: &TrustDomain,
    now: OffsetDateTime,
) -> Result<Authority, AuthorityError> {
    if dir_has_entries(dir)? {
        return Err(AuthorityError::DirNotEmpty {
            dir: dir.to_path_buf(),
        });
    }
    let (cert_pem, key_pem) = generate_self_signed(trust_domain, now)?;

    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    create_private_dir(parent).map_err(|e| AuthorityError::io(parent, e))?;
    let staging = staging_dir(dir);
    create_private_dir(&staging).map_err(|e| AuthorityError::io(&staging, e))?;
    let written = (|| {
        write_atomic(
            &file(&staging, ISTIO_CA_KEY),
            key_pem.as_bytes(),
            SECRET_FILE_MODE,
        )?;
        for name in [ISTIO_CA_CERT, ISTIO_ROOT_CERT, ISTIO_CERT_CHAIN] {
            write_atomic(&file(&staging, name), cert_pem.as_bytes(), PUBLIC_FILE_MODE)?;
        }
        // rename(2) replaces an empty directory atomically, and fails if
        // another process filled it first.
        fs::rename(&staging, dir)?;
        fs::File::open(parent)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&staging);
        if dir_has_entries(dir).unwrap_or(false) {
            // Lost a race with another creator: use its CA.
            return load_dir(dir, trust_domain, now);
        }
        return Err(AuthorityError::io(dir, e));
    }
    from_pem(
        trust_domain,
        &cert_pem,
        key_pem.as_bytes(),
        &file(dir, ISTIO_CA_CERT),
        &file(dir, ISTIO_CA_KEY),
        now,
    )
}

/// Generates a self-signed root (ECDSA P-256, ten years) in memory:
/// `(certificate PEM, private key PEM)`.
pub fn generate_self_signed(
    trust_domain: &TrustDomain,
    now: OffsetDateTime,
) -> Result<(String, Zeroizing<String>), AuthorityError> {
    let key = CaKey::generate_p256().map_err(|e| AuthorityError::Generate(e.to_string()))?;
    let params = root_params(trust_domain, &key, now)?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| AuthorityError::Generate(e.to_string()))?;
    Ok((cert.pem(), key.expose_secret_pem()))
}

/// Builds a root authority from a self-signed certificate and its key held
/// in memory (e.g. read from a Kubernetes Secret); `cert_label` and
/// `key_label` name where they came from in errors.
pub fn from_pem(
    trust_domain: &TrustDomain,
    cert_pem: &str,
    key_pem: &[u8],
    cert_label: &Path,
    key_label: &Path,
    now: OffsetDateTime,
) -> Result<Authority, AuthorityError> {
    let certs = parse_certs(cert_pem.as_bytes(), cert_label)?;
    let signing_cert = certs
        .first()
        .cloned()
        .ok_or_else(|| AuthorityError::NoCertificate {
            path: cert_label.to_path_buf(),
        })?;
    let material = Material {
        roots: vec![signing_cert.clone()],
        signing_cert,
        key_pem: Zeroizing::new(key_pem.to_vec()),
        key_path: key_label.to_path_buf(),
        chain: certs.into_iter().skip(1).collect(),
        roots_path: cert_label.to_path_buf(),
    };
    let authority = Authority::from_material(trust_domain.clone(), material, now)?;
    probe::self_test(&authority, now)?;
    Ok(authority)
}

/// The template of a self-signed root:
/// `O=<trust domain>, CN=Sigil root CA <key id>`, URI SAN
/// `spiffe://<trust domain>`, CA:true, keyCertSign + cRLSign.
///
/// The key id in the CN (the first 8 bytes of the subject key identifier,
/// in hex) makes every root's subject unique: two roots of one trust domain
/// (a replaced CA directory, a rotation) never share a subject, so
/// issuer-name chain building and bundle tools cannot confuse them.
fn root_params(
    trust_domain: &TrustDomain,
    key: &CaKey,
    now: OffsetDateTime,
) -> Result<CertificateParams, AuthorityError> {
    let mut params = CertificateParams::default();
    let key_id = params.key_identifier(key);
    let short: String = key_id.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain.as_str());
    dn.push(DnType::CommonName, format!("{ROOT_CN_PREFIX}{short}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let uri = trust_domain
        .id_string()
        .try_into()
        .map_err(|e: rcgen::Error| AuthorityError::Generate(e.to_string()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.serial_number = Some(random_serial());
    // Backdate a little for clock skew between replicas and agents.
    let out_of_range = || AuthorityError::Generate(format!("{now} is out of the date range"));
    params.not_before = now
        .checked_sub(Duration::minutes(5))
        .ok_or_else(out_of_range)?;
    params.not_after = now
        .checked_add(SELF_SIGNED_VALIDITY)
        .ok_or_else(out_of_range)?;
    Ok(params)
}

fn staging_dir(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ca".to_owned());
    let nonce: u64 = rand::random();
    dir.with_file_name(format!(".{name}.init-{nonce:016x}"))
}

fn dir_has_entries(dir: &Path) -> Result<bool, AuthorityError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(AuthorityError::io(dir, e)),
    }
}

// === reading ===

fn read_material(dir: &Path, layout: Layout) -> Result<Material, AuthorityError> {
    let (cert_path, key_path, chain_path, roots_path) = match layout {
        Layout::Istio => (
            file(dir, ISTIO_CA_CERT),
            file(dir, ISTIO_CA_KEY),
            Some(file(dir, ISTIO_CERT_CHAIN)),
            file(dir, ISTIO_ROOT_CERT),
        ),
        Layout::CertManager => (
            file(dir, CM_TLS_CRT),
            file(dir, CM_TLS_KEY),
            None,
            file(dir, CM_CA_CRT),
        ),
    };
    let mut certs = read_certs(&cert_path)?.into_iter();
    let signing_cert = certs.next().ok_or_else(|| AuthorityError::NoCertificate {
        path: cert_path.clone(),
    })?;
    // cert-manager puts the issuing chain after the signing certificate.
    let mut chain: Vec<SourcedCert> = certs.collect();
    if let Some(chain_path) = chain_path {
        // Optional, and may be empty when the root signs directly.
        if chain_path.exists() && !read_file(&chain_path)?.trim_ascii().is_empty() {
            chain.extend(read_certs(&chain_path)?);
        }
    }
    let roots = read_certs(&roots_path)?;
    if roots.is_empty() {
        return Err(AuthorityError::NoCertificate { path: roots_path });
    }
    let key_pem = read_file(&key_path)?;
    Ok(Material {
        signing_cert,
        key_pem,
        key_path,
        chain,
        roots,
        roots_path,
    })
}

fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, AuthorityError> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => AuthorityError::MissingFile {
            path: path.to_path_buf(),
        },
        _ => AuthorityError::io(path, e),
    })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(AuthorityError::io(
            path,
            std::io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "file is {} bytes; the limit is {MAX_FILE_BYTES}",
                    meta.len()
                ),
            ),
        ));
    }
    fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| AuthorityError::io(path, e))
}

fn read_certs(path: &Path) -> Result<Vec<SourcedCert>, AuthorityError> {
    parse_certs(&read_file(path)?, path)
}

fn parse_certs(pem: &[u8], path: &Path) -> Result<Vec<SourcedCert>, AuthorityError> {
    let mut out = Vec::new();
    for (index, item) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let der = item.map_err(|e| AuthorityError::BadCertificate {
            path: path.to_path_buf(),
            index,
            reason: e.to_string(),
        })?;
        out.push(SourcedCert {
            der,
            path: path.to_path_buf(),
            index,
        });
    }
    if out.is_empty() {
        return Err(AuthorityError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Barrier};

    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("cluster.local").unwrap()
    }

    #[test]
    fn concurrent_creators_end_up_with_one_ca() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("ca");
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (dir, barrier) = (dir.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    load_or_create_self_signed(&dir, &td(), OffsetDateTime::now_utc())
                        .map(|(a, _)| a.roots().to_vec())
                })
            })
            .collect();
        let roots: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect();
        assert!(roots.windows(2).all(|w| w[0] == w[1]), "one root for all");
        // Exactly the four Istio files, no staging leftovers beside them.
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ISTIO_CA_CERT,
                ISTIO_CA_KEY,
                ISTIO_CERT_CHAIN,
                ISTIO_ROOT_CERT
            ]
        );
        let siblings = fs::read_dir(parent.path()).unwrap().count();
        assert_eq!(siblings, 1, "no staging directory left behind");
    }

    #[test]
    fn created_ca_is_reloaded_with_private_modes() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("ca");
        let (first, created) =
            load_or_create_self_signed(&dir, &td(), OffsetDateTime::now_utc()).unwrap();
        assert!(created);
        let (second, created) =
            load_or_create_self_signed(&dir, &td(), OffsetDateTime::now_utc()).unwrap();
        assert!(!created);
        assert_eq!(first.roots(), second.roots());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(ISTIO_CA_KEY)), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn refuses_to_create_over_unrelated_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        assert!(matches!(
            load_or_create_self_signed(dir.path(), &td(), OffsetDateTime::now_utc()),
            Err(AuthorityError::DirNotEmpty { .. })
        ));
        assert_eq!(fs::read(dir.path().join("notes.txt")).unwrap(), b"mine");
    }

    #[test]
    fn an_empty_existing_directory_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let (_, created) =
            load_or_create_self_signed(dir.path(), &td(), OffsetDateTime::now_utc()).unwrap();
        assert!(created);
        assert!(dir.path().join(ISTIO_CA_KEY).exists());
    }

    fn subject_and_ski(cert_pem: &str) -> (String, String, Vec<u8>) {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ski = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(k.0.to_vec())
                }
                _ => None,
            })
            .unwrap();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        (cert.subject().to_string(), cn, ski)
    }

    #[test]
    fn two_roots_of_one_trust_domain_never_share_a_subject() {
        let now = OffsetDateTime::now_utc();
        let (a, _) = generate_self_signed(&td(), now).unwrap();
        let (b, _) = generate_self_signed(&td(), now).unwrap();
        let (subject_a, cn_a, ski_a) = subject_and_ski(&a);
        let (subject_b, cn_b, _) = subject_and_ski(&b);
        assert_ne!(subject_a, subject_b);
        assert!(
            subject_a.starts_with("O=cluster.local, CN=Sigil root CA "),
            "{subject_a}"
        );
        // The CN ends in the first 8 bytes of the root's own SKI.
        let hex: String = ski_a.iter().take(8).map(|b| format!("{b:02x}")).collect();
        assert_eq!(cn_a, format!("{ROOT_CN_PREFIX}{hex}"));
        assert_ne!(cn_a, cn_b);
    }

    #[test]
    fn a_group_or_world_readable_key_file_is_reported_not_refused() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("ca");
        create_self_signed(&dir, &td(), OffsetDateTime::now_utc()).unwrap();
        let key = dir.join(ISTIO_CA_KEY);
        let load_with = |mode: u32| {
            fs::set_permissions(&key, fs::Permissions::from_mode(mode)).unwrap();
            load_dir(&dir, &td(), OffsetDateTime::now_utc())
                .unwrap()
                .key_file_warnings()
                .to_vec()
        };
        for mode in [0o644, 0o640, 0o604, 0o660] {
            assert_eq!(
                load_with(mode),
                [KeyFileWarning {
                    path: key.clone(),
                    mode
                }],
                "{mode:o}"
            );
        }
        for mode in [0o600, 0o400] {
            assert_eq!(load_with(mode), [], "{mode:o}");
        }
        // The message names the file and the mode.
        let warning = key_file_warning(&key).map(|w| w.to_string());
        assert_eq!(warning, None);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let warning = key_file_warning(&key).unwrap().to_string();
        assert!(
            warning.contains("ca-key.pem") && warning.contains("0644"),
            "{warning}"
        );
    }
}
