//! TLS for the peer link: rustls configurations (TLS 1.3 only, ALPN
//! `hamirror/1`, client authentication required, no session resumption)
//! and the verifier that pins the peer's key. Owns the rule "accept exactly
//! the certificate whose SubjectPublicKeyInfo hashes to the configured
//! fingerprint" and the refusal message naming both fingerprints. Knows
//! nothing of sockets; `endpoint` wraps these configs for QUIC.
//!
//! There is no CA: each node's certificate is self-signed, and the names and
//! dates in it mean nothing. Pinning the key replaces chain building, name
//! and expiry checks; the TLS 1.3 CertificateVerify signature is still
//! checked with the provider's algorithms, which proves the peer holds the
//! private key of the pinned public key.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme};

use super::identity::{Fingerprint, Identity};

/// The application protocol both sides must announce (ALPN), owned by the
/// wire crate. A peer that speaks another protocol, or another major
/// version of this one, fails the handshake instead of misreading frames.
pub use hamirror_wire::ALPN;

/// The name the client asks for (SNI). Meaningless with pinned keys, but
/// TLS needs one; fixed so that node names need not be DNS names.
pub const SERVER_NAME: &str = "hamirror";

/// The ring provider, TLS 1.3 suites only, AES-128-GCM first: with AES-NI it
/// is the fastest of the three for bulk data, and every suite is strong.
pub fn provider() -> CryptoProvider {
    use rustls::crypto::ring::cipher_suite as cs;
    CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    }
}

/// Why the peer's certificate was refused. The TLS alert only carries a
/// code, so the verifier keeps this for the endpoint to report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error(
        "peer {peer} presented {presented}, but {conf} pins {pinned}; if {peer}'s key was regenerated, \
         update its fingerprint in {conf} (`hamirror init --show` on {peer} prints it)"
    )]
    Mismatch {
        peer: String,
        conf: String,
        presented: Fingerprint,
        pinned: Fingerprint,
    },
    #[error(
        "peer {peer} presented {presented}, but {conf} pins no fingerprint (none configured); \
         run `hamirror init --show` on {peer} and put `fingerprint = <what it prints>` in {conf}"
    )]
    NotConfigured {
        peer: String,
        conf: String,
        presented: Fingerprint,
    },
    #[error("peer {peer} presented a certificate that cannot be parsed: {reason}")]
    BadCertificate { peer: String, reason: String },
    /// A listener that accepts several peers (fan-out) from one address:
    /// the key is none of theirs.
    #[error(
        "a node presented {presented}, but none of {confs} pins it (the peers {peers} at that address); if a \
         peer's key was regenerated, update its fingerprint (`hamirror init --show` on it prints it)"
    )]
    NoneOf {
        peers: String,
        confs: String,
        presented: Fingerprint,
    },
}

/// A [`PinError`] whose `Debug` is its message. rustls formats a custom
/// certificate error with `Debug`, and quinn sends that text as the reason
/// of its CONNECTION_CLOSE: this is how the refused side learns both
/// fingerprints ([`refusal_reason`] extracts the message again).
struct Refusal(PinError);

impl std::fmt::Debug for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Refusal {}

/// The refusal message inside the close reason a peer's verifier produced
/// (`invalid peer certificate: Other(OtherError(<message>))`), or the whole
/// reason when it has another form.
pub fn refusal_reason(reason: &str) -> &str {
    reason
        .split_once("OtherError(")
        .and_then(|(_, rest)| rest.strip_suffix("))"))
        .unwrap_or(reason)
}

/// The verifier for one handshake with the peer: accepts exactly the
/// certificate whose key has the pinned fingerprint. Used on both sides
/// (server verifying the client, client verifying the server).
///
/// Make one per connection: it records the refusal of its handshake.
#[derive(Debug)]
pub struct PinnedPeer {
    /// The peer (or, on a listener of several peers at one address, the
    /// peers) whose pinned key is accepted.
    pins: Vec<Pin>,
    algorithms: WebPkiSupportedAlgorithms,
    refusal: Mutex<Option<PinError>>,
}

/// One peer's name, where its fingerprint is configured, and the fingerprint.
#[derive(Debug, Clone)]
struct Pin {
    peer: String,
    conf: String,
    pinned: Option<Fingerprint>,
}

impl PinnedPeer {
    /// `peer` is the peer's node name; `conf` names where its fingerprint is
    /// configured (`serv2.conf`), for the message.
    pub fn new(peer: &str, conf: &str, pinned: Option<Fingerprint>) -> PinnedPeer {
        PinnedPeer::any_of([(peer.to_string(), conf.to_string(), pinned)])
    }

    /// Accepts the pinned key of any one of `pins` (peer, conf, pinned): a
    /// listener of several peers that connect from one address. With one,
    /// the same as [`PinnedPeer::new`].
    pub fn any_of(pins: impl IntoIterator<Item = (String, String, Option<Fingerprint>)>) -> PinnedPeer {
        PinnedPeer {
            pins: pins
                .into_iter()
                .map(|(peer, conf, pinned)| Pin { peer, conf, pinned })
                .collect(),
            algorithms: provider().signature_verification_algorithms,
            refusal: Mutex::new(None),
        }
    }

    /// The refusal recorded by the last handshake, if it refused.
    pub fn take_refusal(&self) -> Option<PinError> {
        self.refusal.lock().ok().and_then(|mut r| r.take())
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let names = || {
            self.pins
                .iter()
                .map(|p| p.peer.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        };
        let refusal = match Fingerprint::of_cert(cert) {
            Ok(presented) if self.pins.iter().any(|p| p.pinned == Some(presented)) => return Ok(()),
            Ok(presented) => match &self.pins[..] {
                [one] => match one.pinned {
                    Some(pinned) => PinError::Mismatch {
                        peer: one.peer.clone(),
                        conf: one.conf.clone(),
                        presented,
                        pinned,
                    },
                    None => PinError::NotConfigured {
                        peer: one.peer.clone(),
                        conf: one.conf.clone(),
                        presented,
                    },
                },
                many => PinError::NoneOf {
                    peers: names(),
                    confs: many.iter().map(|p| p.conf.as_str()).collect::<Vec<_>>().join(", "),
                    presented,
                },
            },
            Err(e) => PinError::BadCertificate {
                peer: names(),
                reason: e.to_string(),
            },
        };
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(refusal.clone());
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
            Arc::new(Refusal(refusal)),
        ))))
    }

    fn tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

/// The configs allow TLS 1.3 only; a TLS 1.2 signature is a protocol error.
fn no_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls13RequiredForQuic,
    ))
}

impl ServerCertVerifier for PinnedPeer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PinnedPeer {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity).map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server side: presents `identity`, requires a client certificate and
/// checks it with `pin`.
///
/// Resumption is off on both sides: a resumed TLS 1.3 session skips the
/// certificate exchange, and every connection must show the pinned key.
pub fn server_config(identity: &Identity, pin: Arc<PinnedPeer>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(provider());
    let key = identity.certified_key(&provider)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(pin)
        .with_cert_resolver(Arc::new(FixedServerCert(key)));
    cfg.alpn_protocols = alpn_ids();
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

/// The client side: presents `identity` and checks the server with `pin`.
pub fn client_config(identity: &Identity, pin: Arc<PinnedPeer>) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(provider());
    let key = identity.certified_key(&provider)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(pin)
        .with_client_cert_resolver(Arc::new(FixedClientCert(key)));
    cfg.alpn_protocols = alpn_ids();
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.enable_early_data = false;
    Ok(cfg)
}

/// The ALPN ids of every protocol version this node speaks, newest first.
/// `HAMIRROR_PROTOCOL=1` offers only version 1 (a test stands in for a
/// node of the previous release with it).
fn alpn_ids() -> Vec<Vec<u8>> {
    let only: Option<u32> = std::env::var("HAMIRROR_PROTOCOL").ok().and_then(|v| v.parse().ok());
    hamirror_wire::VERSIONS
        .iter()
        .filter(|(v, _)| only.is_none_or(|o| o == *v))
        .map(|(_, id)| id.to_vec())
        .collect()
}

/// Always presents this node's one certificate.
#[derive(Debug)]
struct FixedServerCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedServerCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Always presents this node's one certificate, whatever the server hints.
#[derive(Debug)]
struct FixedClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        // Offer the key only if the server can verify its scheme; otherwise
        // the handshake fails on the server with a clear "no certificate".
        self.0.key.choose_scheme(sigschemes).map(|_| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify_as_server(pin: &PinnedPeer, id: &Identity) -> Result<(), rustls::Error> {
        ClientCertVerifier::verify_client_cert(pin, id.cert(), &[], UnixTime::now()).map(|_| ())
    }

    #[test]
    fn only_the_pinned_key_is_accepted() {
        let good = Identity::generate("serv2").unwrap();
        let bad = Identity::generate("serv2").unwrap();
        let pin = PinnedPeer::new("serv2", "serv2.conf", Some(good.fingerprint()));
        verify_as_server(&pin, &good).unwrap();
        assert_eq!(pin.take_refusal(), None);

        assert!(verify_as_server(&pin, &bad).is_err());
        let msg = pin.take_refusal().unwrap().to_string();
        assert!(msg.contains(&bad.fingerprint().to_string()), "{msg}");
        assert!(msg.contains(&good.fingerprint().to_string()), "{msg}");
        assert!(msg.starts_with("peer serv2 presented sha256:"), "{msg}");
        assert!(msg.contains("but serv2.conf pins sha256:"), "{msg}");
    }

    #[test]
    fn a_listener_of_several_peers_accepts_each_pinned_key_and_no_other() {
        let (b, c, stranger) = (
            Identity::generate("serv2").unwrap(),
            Identity::generate("serv3").unwrap(),
            Identity::generate("serv9").unwrap(),
        );
        let pin = PinnedPeer::any_of([
            ("serv2".into(), "serv2.conf".into(), Some(b.fingerprint())),
            ("serv3".into(), "serv3.conf".into(), Some(c.fingerprint())),
            ("serv4".into(), "serv4.conf".into(), None),
        ]);
        verify_as_server(&pin, &b).unwrap();
        verify_as_server(&pin, &c).unwrap();
        assert_eq!(pin.take_refusal(), None);
        assert!(verify_as_server(&pin, &stranger).is_err());
        let msg = pin.take_refusal().unwrap().to_string();
        assert!(msg.contains(&stranger.fingerprint().to_string()), "{msg}");
        assert!(
            msg.contains("none of serv2.conf, serv3.conf, serv4.conf pins it (the peers serv2 or serv3 or serv4"),
            "{msg}"
        );
    }

    #[test]
    fn no_pinned_fingerprint_refuses_every_key() {
        let id = Identity::generate("serv2").unwrap();
        let pin = PinnedPeer::new("serv2", "serv2.conf", None);
        let server_name = ServerName::try_from(SERVER_NAME).unwrap();
        let r = ServerCertVerifier::verify_server_cert(&pin, id.cert(), &[], &server_name, &[], UnixTime::now());
        assert!(r.is_err());
        let msg = pin.take_refusal().unwrap().to_string();
        assert!(msg.contains(&id.fingerprint().to_string()), "{msg}");
        assert!(msg.contains("pins no fingerprint"), "{msg}");
    }

    #[test]
    fn garbage_certificate_is_refused_without_panic() {
        let pin = PinnedPeer::new("serv2", "serv2.conf", None);
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01]);
        assert!(ClientCertVerifier::verify_client_cert(&pin, &junk, &[], UnixTime::now()).is_err());
        assert!(matches!(pin.take_refusal(), Some(PinError::BadCertificate { .. })));
    }

    #[test]
    fn the_refusal_message_survives_the_trip_through_rustls_and_back() {
        let id = Identity::generate("serv2").unwrap();
        let pin = PinnedPeer::new("serv2", "serv2.conf", None);
        let err = ClientCertVerifier::verify_client_cert(&pin, id.cert(), &[], UnixTime::now()).unwrap_err();
        let want = pin.take_refusal().unwrap().to_string();
        // What quinn puts in CONNECTION_CLOSE is the rustls error's Display.
        assert_eq!(refusal_reason(&err.to_string()), want);
        assert_eq!(refusal_reason("no_application_protocol"), "no_application_protocol");
    }

    #[test]
    fn configs_build_for_tls13_with_alpn() {
        let id = Identity::generate("serv1").unwrap();
        let pin = Arc::new(PinnedPeer::new("serv2", "serv2.conf", None));
        let s = server_config(&id, pin.clone()).unwrap();
        let c = client_config(&id, pin).unwrap();
        let ids = vec![ALPN.to_vec(), b"hamirror/1".to_vec()];
        assert_eq!(s.alpn_protocols, ids, "newest first");
        assert_eq!(c.alpn_protocols, ids);
        assert_eq!(s.send_tls13_tickets, 0);
    }
}
