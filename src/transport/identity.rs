//! This node's identity: an Ed25519 key and a self-signed certificate kept
//! together in one PEM file (the `key` path of `NODE.conf`), and the
//! public-key [`Fingerprint`] the peer pins. Owns creating, saving (mode
//! 0600, never silently replacing an existing key) and loading that file.
//! Knows nothing of sockets or TLS sessions; `tls` builds on it.
//!
//! The fingerprint hashes the certificate's SubjectPublicKeyInfo, not the
//! whole certificate, so it names the key: re-issuing a certificate for the
//! same key would not change it, a new key always does.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;

/// Errors about the identity file. None of them goes away by retrying: each
/// needs the operator (run `hamirror init`, fix a permission).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no identity key at {}: run `hamirror init` on this node", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read identity key {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{} is not a usable hamirror identity: {reason}; `hamirror init --force` replaces it with a new key",
        path.display()
    )]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{} already holds this node's key ({fingerprint}); refusing to replace it. \
         Pass --force to create a new key, then update `fingerprint` in this node's NODE.conf",
        path.display()
    )]
    Exists { path: PathBuf, fingerprint: String },
    #[error("cannot write identity key {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot create a key and certificate: {0}")]
    Generate(String),
    #[error("the certificate cannot be parsed: {0}")]
    BadCertificate(String),
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo DER, written
/// `sha256:<64 lowercase hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded SubjectPublicKeyInfo (with its outer
    /// SEQUENCE).
    pub fn of_spki(spki_der: &[u8]) -> Fingerprint {
        let d = ring::digest::digest(&ring::digest::SHA256, spki_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Fingerprint(out)
    }

    /// The fingerprint of the key a DER certificate carries.
    pub fn of_cert(cert: &CertificateDer<'_>) -> Result<Fingerprint, IdentityError> {
        let parsed = ParsedCertificate::try_from(cert).map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        Ok(Fingerprint::of_spki(parsed.subject_public_key_info().as_ref()))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    /// Parses the form [`crate::config::is_fingerprint`] accepts.
    fn from_str(s: &str) -> Result<Self, String> {
        if !crate::config::is_fingerprint(s) {
            return Err(format!(
                "expected a fingerprint like sha256:<64 lowercase hex digits>, found {s:?}"
            ));
        }
        let hex = &s.as_bytes()["sha256:".len()..];
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let digit = |c: u8| if c.is_ascii_digit() { c - b'0' } else { c - b'a' + 10 };
            out[i] = digit(pair[0]) << 4 | digit(pair[1]);
        }
        Ok(Fingerprint(out))
    }
}

/// A node's key and self-signed certificate.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    fingerprint: Fingerprint,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl Identity {
    /// A new Ed25519 key with a self-signed certificate naming `node`.
    /// Ed25519: small, fast to sign and verify, and supported by the ring
    /// provider for TLS 1.3 on both sides.
    pub fn generate(node: &str) -> Result<Identity, IdentityError> {
        let gen_err = |e: rcgen::Error| IdentityError::Generate(e.to_string());
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(gen_err)?;
        // The name is informative only: peers pin the key, not the name.
        let mut params = rcgen::CertificateParams::new(vec!["hamirror".to_string()]).map_err(gen_err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("hamirror node {node}"));
        let cert = params.self_signed(&key_pair).map_err(gen_err)?;
        let cert = cert.der().clone();
        let key = PrivateKeyDer::try_from(key_pair.serialize_der()).map_err(|e| IdentityError::Generate(e.into()))?;
        let fingerprint = Fingerprint::of_cert(&cert)?;
        Ok(Identity { cert, key, fingerprint })
    }

    /// Reads and checks an identity file: exactly one certificate, one
    /// private key, and the key must belong to the certificate.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let bytes = fs::read(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => IdentityError::Missing { path: path.into() },
            _ => IdentityError::Read {
                path: path.into(),
                source,
            },
        })?;
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "identity key {} is readable by other users (mode {:o}); `chmod 600` it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
        Identity::from_pem(&bytes).map_err(|reason| IdentityError::Invalid {
            path: path.into(),
            reason,
        })
    }

    /// Parses the PEM text [`Identity::to_pem`] writes.
    pub fn from_pem(pem: &[u8]) -> Result<Identity, String> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("bad PEM: {e}"))?;
        let [cert] = <[_; 1]>::try_from(certs)
            .map_err(|c| format!("expected exactly one CERTIFICATE block, found {}", c.len()))?;
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no usable PRIVATE KEY block: {e}"))?;
        let fingerprint = Fingerprint::of_cert(&cert).map_err(|e| e.to_string())?;
        let id = Identity { cert, key, fingerprint };
        id.certified_key(&super::tls::provider())
            .map_err(|e| format!("the private key does not fit the certificate: {e}"))?;
        Ok(id)
    }

    /// The PEM text of the file: the private key, then the certificate.
    pub fn to_pem(&self) -> String {
        let block = |label: &str, der: &[u8]| {
            let mut s = format!("-----BEGIN {label}-----\n");
            for line in base64(der).as_bytes().chunks(64) {
                s.push_str(std::str::from_utf8(line).unwrap_or_default());
                s.push('\n');
            }
            s.push_str(&format!("-----END {label}-----\n"));
            s
        };
        block("PRIVATE KEY", self.key.secret_der()) + &block("CERTIFICATE", self.cert.as_ref())
    }

    /// Writes the identity to `path` (mode 0600; missing parent directories
    /// are created with mode 0700). The file appears complete or not at all.
    /// An existing file is replaced only when `replace` is true.
    pub fn save(&self, path: &Path, replace: bool) -> Result<(), IdentityError> {
        let werr = |source| IdentityError::Write {
            path: path.into(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(werr)?;
        let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(self.to_pem().as_bytes())?;
            f.sync_all()?;
            if replace {
                fs::rename(&tmp, path)
            } else {
                // link(2) fails when the name exists: no window in which a
                // concurrent `init` could be overwritten.
                let linked = fs::hard_link(&tmp, path);
                let _ = fs::remove_file(&tmp);
                linked
            }
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            if e.kind() == io::ErrorKind::AlreadyExists {
                let fingerprint = match Identity::load(path) {
                    Ok(id) => id.fingerprint.to_string(),
                    Err(e) => format!("unreadable: {e}"),
                };
                return Err(IdentityError::Exists {
                    path: path.into(),
                    fingerprint,
                });
            }
            return Err(werr(e));
        }
        // Make the new name durable too.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The key that signs this node's QUIC stateless resets, derived from
    /// its private key so that it survives a restart: a peer still holding
    /// a connection to the previous process then learns at its next packet
    /// that the connection is gone, instead of waiting for the idle timeout.
    /// Secret like the key it comes from (a forged reset closes connections).
    pub(crate) fn reset_key(&self) -> Arc<dyn quinn::crypto::HmacKey> {
        Arc::new(ResetKey(blake3::derive_key(
            "hamirror 2025 QUIC stateless reset key",
            self.key.secret_der(),
        )))
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The key and certificate as rustls presents them, checked to match.
    pub(crate) fn certified_key(&self, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, rustls::Error> {
        let ck = CertifiedKey::from_der(vec![self.cert.clone()], self.key.clone_key(), provider)?;
        Ok(Arc::new(ck))
    }
}

/// Standard base64 with padding (RFC 4648), for the PEM body.
/// A keyed BLAKE3 MAC in the shape quinn asks for its reset tokens.
struct ResetKey([u8; 32]);

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        let mac = blake3::keyed_hash(&self.0, data);
        let n = signature_out.len().min(blake3::OUT_LEN);
        signature_out[..n].copy_from_slice(&mac.as_bytes()[..n]);
    }

    fn signature_len(&self) -> usize {
        blake3::OUT_LEN
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        // `blake3::Hash` compares in constant time.
        let ok = <[u8; blake3::OUT_LEN]>::try_from(signature)
            .is_ok_and(|s| blake3::keyed_hash(&self.0, data) == blake3::Hash::from_bytes(s));
        if ok { Ok(()) } else { Err(quinn::crypto::CryptoError) }
    }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_round_trips_through_its_text_form() {
        let fp = Fingerprint::of_spki(b"some key");
        let text = fp.to_string();
        assert!(crate::config::is_fingerprint(&text), "{text}");
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert!("sha256:ABC".parse::<Fingerprint>().is_err());
        assert!(format!("sha1:{}", &text[7..]).parse::<Fingerprint>().is_err());
    }

    #[test]
    fn fingerprint_is_sha256_of_the_spki() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            Fingerprint::of_spki(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn a_saved_identity_loads_back_with_the_same_fingerprint_and_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state/serv1/identity.pem");
        let id = Identity::generate("serv1").unwrap();
        id.save(&path, false).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Identity::load(&path).unwrap();
        assert_eq!(back.fingerprint(), id.fingerprint());
        assert_eq!(back.cert(), id.cert());
    }

    #[test]
    fn the_reset_key_is_the_same_after_a_reload_and_differs_between_nodes() {
        let id = Identity::generate("serv2").unwrap();
        let again = Identity::from_pem(id.to_pem().as_bytes()).unwrap();
        let other = Identity::generate("serv1").unwrap();
        let cid = [7u8; 8];
        let sign = |i: &Identity| {
            let k = i.reset_key();
            let mut sig = vec![0u8; k.signature_len()];
            k.sign(&cid, &mut sig);
            sig
        };
        assert_eq!(sign(&id), sign(&again), "a restarted process must sign alike");
        assert_ne!(sign(&id), sign(&other));
        let key = again.reset_key();
        assert!(key.verify(&cid, &sign(&id)).is_ok());
        let mut forged = sign(&id);
        forged[0] ^= 1;
        assert!(key.verify(&cid, &forged).is_err());
        assert!(key.verify(&cid, &forged[..16]).is_err());
    }

    #[test]
    fn save_refuses_to_replace_unless_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("identity.pem");
        let first = Identity::generate("a").unwrap();
        first.save(&path, false).unwrap();
        let second = Identity::generate("a").unwrap();
        assert_ne!(first.fingerprint(), second.fingerprint());
        match second.save(&path, false) {
            Err(IdentityError::Exists { fingerprint, .. }) => assert_eq!(fingerprint, first.fingerprint().to_string()),
            other => panic!("expected Exists, got {other:?}"),
        }
        assert_eq!(Identity::load(&path).unwrap().fingerprint(), first.fingerprint());
        second.save(&path, true).unwrap();
        assert_eq!(Identity::load(&path).unwrap().fingerprint(), second.fingerprint());
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn load_reports_missing_and_mismatched_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("identity.pem");
        assert!(matches!(Identity::load(&path), Err(IdentityError::Missing { .. })));
        // Key of one identity with the certificate of another.
        let a = Identity::generate("a").unwrap().to_pem();
        let b = Identity::generate("b").unwrap().to_pem();
        let key_a = &a[..a.find("-----BEGIN CERTIFICATE").unwrap()];
        let cert_b = &b[b.find("-----BEGIN CERTIFICATE").unwrap()..];
        fs::write(&path, format!("{key_a}{cert_b}")).unwrap();
        let err = Identity::load(&path).unwrap_err().to_string();
        assert!(err.contains("does not fit the certificate"), "{err}");
        fs::write(&path, "garbage").unwrap();
        let err = Identity::load(&path).unwrap_err().to_string();
        assert!(err.contains("expected exactly one CERTIFICATE"), "{err}");
    }
}
