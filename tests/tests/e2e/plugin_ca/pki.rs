//! The throwaway "enterprise PKI" the plug-in CA tests load: root,
//! intermediate and issuing CAs made with the `openssl` command line (so the
//! material is not shaped by the library under test), written in Istio's
//! plug-in layout.

use std::path::{Path, PathBuf};

use crate::common::*;

/// The openssl configuration the test PKI is built with: an `openssl ca`
/// database (for explicit validity dates) and one extension section per CA
/// shape.
const OPENSSL_CNF: &str = r#"
[req]
distinguished_name = req_dn
[req_dn]

[ca]
default_ca = test_ca
[test_ca]
database = index.txt
new_certs_dir = .
serial = serial.txt
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
[policy_any]
organizationName = optional
commonName = supplied

[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[not_a_ca]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[no_key_cert_sign]
basicConstraints = critical,CA:TRUE
keyUsage = critical,digitalSignature,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[uri_name_constraints]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
nameConstraints = critical,permitted;URI:.example.org
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[other_trust_domain]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectAltName = URI:spiffe://other.org
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"#;

/// A CA made by openssl: its certificate and key files, relative to the
/// PKI directory.
#[derive(Debug, Clone)]
pub(super) struct Ca {
    pub(super) cert: String,
    pub(super) key: String,
}

/// A throwaway enterprise PKI in a temp dir.
pub(super) struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub(super) fn new() -> Self {
        let dir = tempdir();
        write(dir.path(), "openssl.cnf", OPENSSL_CNF);
        write(dir.path(), "index.txt", "");
        write(dir.path(), "serial.txt", "1000\n");
        Self { dir }
    }

    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn openssl(&self, args: &[&str]) -> String {
        openssl(self.path(), args)
    }

    /// An ECDSA P-256 key as `openssl ecparam -genkey` writes it: SEC1
    /// (`EC PRIVATE KEY`) after an `EC PARAMETERS` block.
    pub(super) fn ec_key(&self, name: &str) -> String {
        self.openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-out", name]);
        name.to_owned()
    }

    /// `openssl genpkey <args>` (PKCS#8 output).
    pub(super) fn genpkey(&self, name: &str, args: &[&str]) -> String {
        let mut all = vec!["genpkey", "-out", name];
        all.extend_from_slice(args);
        self.openssl(&all);
        name.to_owned()
    }

    /// A self-signed root `O=Example Corp, CN=<name>` with a new P-256 key.
    pub(super) fn root(&self, name: &str) -> Ca {
        let key = self.ec_key(&format!("{name}-key.pem"));
        let cert = format!("{name}.pem");
        let subj = format!("/O=Example Corp/CN={name}");
        self.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &key,
            "-subj",
            &subj,
            "-days",
            "3650",
            "-config",
            "openssl.cnf",
            "-extensions",
            "v3_ca",
            "-out",
            &cert,
        ]);
        Ca { cert, key }
    }

    /// A request for `key` with subject `O=Example Corp, CN=<name>`.
    pub(super) fn csr(&self, name: &str, key: &str) -> String {
        let csr = format!("{name}.csr");
        let subj = format!("/O=Example Corp/CN={name}");
        self.openssl(&[
            "req",
            "-new",
            "-key",
            key,
            "-subj",
            &subj,
            "-config",
            "openssl.cnf",
            "-out",
            &csr,
        ]);
        csr
    }

    /// A CA certificate for `key`, signed by `issuer` with `openssl x509
    /// -req` and the extension section `section`, valid for a year.
    pub(super) fn sub_ca(&self, name: &str, key: &str, issuer: &Ca, section: &str) -> Ca {
        let csr = self.csr(name, key);
        let cert = format!("{name}.pem");
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &issuer.cert,
            "-CAkey",
            &issuer.key,
            "-sha256",
            "-days",
            "365",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            section,
            "-out",
            &cert,
        ]);
        Ca {
            cert,
            key: key.to_owned(),
        }
    }

    /// A valid intermediate with a new P-256 key.
    pub(super) fn intermediate(&self, name: &str, issuer: &Ca) -> Ca {
        let key = self.ec_key(&format!("{name}-key.pem"));
        self.sub_ca(name, &key, issuer, "v3_ca")
    }

    /// A CA certificate with explicit validity dates (`openssl ca
    /// -startdate -enddate`, since `openssl x509` 3.0 cannot backdate).
    pub(super) fn dated_ca(&self, name: &str, issuer: &Ca, start: &str, end: &str) -> Ca {
        let key = self.ec_key(&format!("{name}-key.pem"));
        let csr = self.csr(name, &key);
        let cert = format!("{name}.pem");
        self.openssl(&[
            "ca",
            "-config",
            "openssl.cnf",
            "-batch",
            "-notext",
            "-cert",
            &issuer.cert,
            "-keyfile",
            &issuer.key,
            "-in",
            &csr,
            "-startdate",
            start,
            "-enddate",
            end,
            "-extensions",
            "v3_ca",
            "-out",
            &cert,
        ]);
        Ca { cert, key }
    }

    pub(super) fn concat(&self, files: &[&str]) -> String {
        files.iter().map(|f| read_string(self.path(), f)).collect()
    }

    /// Istio's layout in `<pki>/<name>`: `ca-cert.pem` and `ca-key.pem`
    /// from `signing`, `cert-chain.pem` = `chain` concatenated,
    /// `root-cert.pem` = `roots` concatenated.
    pub(super) fn istio_dir(
        &self,
        name: &str,
        signing: &Ca,
        chain: &[&Ca],
        roots: &[&Ca],
    ) -> PathBuf {
        let dir = self.path().join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {name}: {e}"));
        write(&dir, "ca-cert.pem", read(self.path(), &signing.cert));
        write(&dir, "ca-key.pem", read(self.path(), &signing.key));
        let chain: Vec<&str> = chain.iter().map(|c| c.cert.as_str()).collect();
        write(&dir, "cert-chain.pem", self.concat(&chain));
        let roots: Vec<&str> = roots.iter().map(|c| c.cert.as_str()).collect();
        write(&dir, "root-cert.pem", self.concat(&roots));
        dir
    }

    /// The DER of a CA's certificate.
    pub(super) fn der(&self, ca: &Ca) -> Vec<u8> {
        pem_file_ders(self.path(), &ca.cert).remove(0)
    }
}
