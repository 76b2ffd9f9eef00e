//! TLS for the client port and for peer links (issue #14 item 3), with rustls and its `ring`
//! crypto provider (it builds with a C compiler only; aws-lc-rs would need cmake and clang).
//!
//! Two independent halves, both configured in the node's `[tls]` table:
//! - **Client port**: the node presents `client_cert_file`/`client_key_file`. With `ca_file`
//!   set, a client that presents a certificate must present one signed by that CA;
//!   `client_certificates_required = true` makes presenting one mandatory.
//! - **Peer links**: always mutual. Each node presents `peer_cert_file`/`peer_key_file` both
//!   when it dials (as a TLS client) and when it accepts (as a TLS server), and verifies the other
//!   side's certificate against `ca_file` (the dialer also checks the name: the host of the
//!   peer's address in `peers` must be in the certificate's subject alternative names). The HMAC
//!   handshake runs unchanged inside the TLS stream: TLS says "a certificate our CA signed", the
//!   HMAC handshake says "a member of this cluster, with this node id and these stored-meaning
//!   settings". Neither replaces the other.
//!
//! Everything a file can get wrong is found when the configuration is validated, before anything
//! listens, and the error names the field, the file and what is wrong (missing, unreadable, not
//! PEM, not a certificate, the key does not match the certificate, the certificate is not signed
//! by the CA). No path here panics on file contents.

use crate::config::SettingsError;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The first byte of every TLS connection (a handshake record). A client port with TLS answers
/// any other first byte with a plaintext RESP error rather than a TLS alert the client cannot
/// read.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The RESP error a plaintext client gets from a TLS-only client port.
pub const PLAINTEXT_REFUSED: &str =
    "-ERR this port requires TLS (redis-cli --tls --cacert CA_FILE); connection closed\r\n";

/// `[tls]` as written in the node's TOML file. Every field is optional; a half (client port or
/// peer links) is on when both of its files are set.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// Certificate chain (PEM, leaf first) the node presents on its client port.
    pub client_cert_file: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// Certificate chain (PEM, leaf first) the node presents on peer links, as server and as
    /// client (so it should allow both `serverAuth` and `clientAuth` if it lists key purposes).
    pub peer_cert_file: Option<PathBuf>,
    /// Private key of `peer_cert_file`.
    pub peer_key_file: Option<PathBuf>,
    /// CA certificates (PEM) that peer certificates, and client certificates if any, must be
    /// signed by. Required with peer TLS.
    pub ca_file: Option<PathBuf>,
    /// Whether clients must present a certificate signed by `ca_file` (default false).
    pub client_certificates_required: Option<bool>,
}

/// A certificate chain and its private key, read and checked to match.
pub struct Identity {
    /// The chain, leaf first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material, even in a debug dump of the settings.
        f.debug_struct("Identity")
            .field("certificates", &self.cert_chain.len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.cert_chain == other.cert_chain && self.key.secret_der() == other.key.secret_der()
    }
}

impl Eq for Identity {}

/// Validated `[tls]`: the material is read once, at validation, so a running node never reads
/// these files again (a certificate rotation is a restart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// What the client port presents; `None`: the client port is plaintext.
    pub client: Option<Identity>,
    /// What peer links present; `None`: peer links are plaintext (HMAC handshake only).
    pub peer: Option<Identity>,
    /// The CA certificates of `ca_file` (empty when it is not set).
    pub ca: Vec<CertificateDer<'static>>,
    /// Whether clients must present a certificate.
    pub client_certificates_required: bool,
}

/// The client port's and the peer links' TLS, built from [`TlsSettings`].
#[derive(Clone)]
pub struct TlsRuntime {
    /// Wraps accepted client connections; `None`: plaintext.
    pub clients: Option<tokio_rustls::TlsAcceptor>,
    /// Peer links; `None`: plaintext.
    pub peers: Option<PeerTls>,
}

/// Both directions of a peer link.
#[derive(Clone)]
pub struct PeerTls {
    /// Wraps inbound peer connections (requires a client certificate signed by the CA).
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Wraps outbound peer connections (presents the peer certificate, verifies the other's).
    pub connector: tokio_rustls::TlsConnector,
}

/// The crypto provider every TLS configuration of the node uses.
#[expect(
    deprecated,
    reason = "rustls 0.23.48 deprecates the ring provider for lacking post-quantum key exchange; \
              the alternative (aws-lc-rs) needs cmake and clang to build, which this project's \
              machines and CI do not have"
)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid<T>(field: &str, reason: impl Into<String>) -> Result<T, SettingsError> {
    Err(SettingsError {
        field: format!("tls.{field}"),
        reason: reason.into(),
    })
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>, SettingsError> {
    std::fs::read(path).or_else(|e| {
        let what = match e.kind() {
            std::io::ErrorKind::NotFound => "is missing".to_string(),
            _ => format!("is unreadable ({e})"),
        };
        invalid(field, format!("{} {what}", path.display()))
    })
}

/// Every certificate in a PEM file, or why there is none. Other PEM sections (a key bundled
/// in the same file) are skipped, as OpenSSL does.
pub fn read_certificates(
    field: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SettingsError> {
    let bytes = read(field, path)?;
    let mut certificates = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        match item {
            Ok(certificate) => certificates.push(certificate),
            Err(e) => return invalid(field, format!("{} is not valid PEM ({e})", path.display())),
        }
    }
    if certificates.is_empty() {
        return invalid(
            field,
            format!(
                "{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        );
    }
    Ok(certificates)
}

fn read_key(field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, SettingsError> {
    let bytes = read(field, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).or_else(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (expected -----BEGIN PRIVATE KEY-----, \
                 -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----)"
                    .to_string()
            }
            e => format!("is not valid PEM ({e})"),
        };
        invalid(field, format!("{} {why}", path.display()))
    })
}

/// Reads a certificate chain and its key and checks that the key is the certificate's.
fn read_identity(
    cert_field: &str,
    cert_path: &Path,
    key_field: &str,
    key_path: &Path,
) -> Result<Identity, SettingsError> {
    let cert_chain = read_certificates(cert_field, cert_path)?;
    let key = read_key(key_field, key_path)?;
    match CertifiedKey::from_der(cert_chain.clone(), key.clone_key(), &provider()) {
        Ok(_) => Ok(Identity { cert_chain, key }),
        Err(rustls::Error::InconsistentKeys(_)) => invalid(
            key_field,
            format!(
                "the key in {} does not match the certificate in {} (tls.{cert_field})",
                key_path.display(),
                cert_path.display()
            ),
        ),
        Err(rustls::Error::InvalidCertificate(e)) => invalid(
            cert_field,
            format!(
                "{} is not a usable X.509 certificate ({e})",
                cert_path.display()
            ),
        ),
        Err(e) => invalid(
            key_field,
            format!("{} is not a usable private key ({e})", key_path.display()),
        ),
    }
}

fn pair<'a>(
    cert_field: &str,
    cert: &'a Option<PathBuf>,
    key_field: &str,
    key: &'a Option<PathBuf>,
) -> Result<Option<(&'a Path, &'a Path)>, SettingsError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        (Some(_), None) => invalid(key_field, format!("is required with tls.{cert_field}")),
        (None, Some(_)) => invalid(cert_field, format!("is required with tls.{key_field}")),
    }
}

fn roots_of(certificates: &[CertificateDer<'static>]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate.clone())
            .map_err(|e| format!("not a usable CA certificate ({e})"))?;
    }
    Ok(roots)
}

impl TlsFile {
    /// Reads and checks every file; `None` when the table sets nothing.
    pub fn validate(&self) -> Result<Option<TlsSettings>, SettingsError> {
        let client_files = pair(
            "client_cert_file",
            &self.client_cert_file,
            "client_key_file",
            &self.client_key_file,
        )?;
        let peer_files = pair(
            "peer_cert_file",
            &self.peer_cert_file,
            "peer_key_file",
            &self.peer_key_file,
        )?;
        let required = self.client_certificates_required.unwrap_or(false);
        if client_files.is_none() && peer_files.is_none() {
            if self.ca_file.is_some() || required {
                return invalid(
                    "client_cert_file",
                    "[tls] sets no certificate: set client_cert_file and client_key_file \
                     (client port) and/or peer_cert_file and peer_key_file (peer links)",
                );
            }
            return Ok(None);
        }
        if required && client_files.is_none() {
            return invalid(
                "client_certificates_required",
                "needs TLS on the client port (tls.client_cert_file and tls.client_key_file)",
            );
        }
        let ca = match &self.ca_file {
            Some(path) => {
                let ca = read_certificates("ca_file", path)?;
                if let Err(why) = roots_of(&ca) {
                    return invalid("ca_file", format!("{}: {why}", path.display()));
                }
                ca
            }
            None if peer_files.is_some() => {
                return invalid(
                    "ca_file",
                    "is required with peer TLS: peers verify each other against it",
                )
            }
            None if required => {
                return invalid(
                    "ca_file",
                    "is required with client_certificates_required: client certificates are \
                     verified against it",
                )
            }
            None => Vec::new(),
        };
        let client = match client_files {
            Some((cert, key)) => Some(read_identity(
                "client_cert_file",
                cert,
                "client_key_file",
                key,
            )?),
            None => None,
        };
        let peer = match peer_files {
            Some((cert, key)) => {
                let identity = read_identity("peer_cert_file", cert, "peer_key_file", key)?;
                // A node whose own certificate its CA did not sign would be refused by every
                // peer, one log line at a time; say so once, at start.
                if let Err(why) = verify_against(&identity.cert_chain, &ca) {
                    return invalid(
                        "peer_cert_file",
                        format!("{} is not accepted by tls.ca_file: {why}", cert.display()),
                    );
                }
                Some(identity)
            }
            None => None,
        };
        let settings = TlsSettings {
            client,
            peer,
            ca,
            client_certificates_required: required,
        };
        // Everything below is checked above; building here too means a start never meets an
        // error that validation let through.
        settings.runtime().map_err(|reason| SettingsError {
            field: "tls".to_string(),
            reason,
        })?;
        Ok(Some(settings))
    }
}

/// Checks `chain` as a peer would when this node dials it: signed by one of `ca`, valid now.
fn verify_against(
    chain: &[CertificateDer<'static>],
    ca: &[CertificateDer<'static>],
) -> Result<(), String> {
    let roots = Arc::new(roots_of(ca)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| e.to_string())?;
    let (leaf, intermediates) = chain.split_first().ok_or("no certificate")?;
    verifier
        .verify_client_cert(leaf, intermediates, UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl TlsSettings {
    /// Builds the acceptors and the connector.
    pub fn runtime(&self) -> Result<TlsRuntime, String> {
        let clients = match &self.client {
            Some(identity) => {
                let builder = ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?;
                let builder = if self.ca.is_empty() {
                    builder.with_no_client_auth()
                } else {
                    let verifier = WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots_of(&self.ca)?),
                        provider(),
                    );
                    let verifier = if self.client_certificates_required {
                        verifier
                    } else {
                        verifier.allow_unauthenticated()
                    };
                    builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
                };
                let config = builder
                    .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())
                    .map_err(|e| format!("client port certificate: {e}"))?;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
            }
            None => None,
        };
        let peers = match &self.peer {
            Some(identity) => {
                let roots = Arc::new(roots_of(&self.ca)?);
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider())
                        .build()
                        .map_err(|e| e.to_string())?;
                let server = ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())
                    .map_err(|e| format!("peer certificate: {e}"))?;
                let server_verifier =
                    WebPkiServerVerifier::builder_with_provider(roots, provider())
                        .build()
                        .map_err(|e| e.to_string())?;
                let client = ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_webpki_verifier(server_verifier)
                    .with_client_auth_cert(identity.cert_chain.clone(), identity.key.clone_key())
                    .map_err(|e| format!("peer certificate: {e}"))?;
                Some(PeerTls {
                    acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
                    connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
                })
            }
            None => None,
        };
        Ok(TlsRuntime { clients, peers })
    }
}

/// The name a certificate must carry for `addr` (`host:port`, `[v6]:port`): the host, as an IP
/// address or a DNS name.
pub fn server_name_of(addr: &str) -> Result<ServerName<'static>, String> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("`{host}` is neither an IP address nor a DNS name"))
}

/// A client's TLS configuration (the `ringkv` CLI, tests): trust the CAs in `ca_file`, and
/// present `identity` (certificate file, key file) if the node asks for one.
pub fn client_config(
    ca_file: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<ClientConfig, String> {
    let ca = read_certificates("ca_file", ca_file).map_err(|e| e.reason)?;
    let roots = roots_of(&ca).map_err(|why| format!("{}: {why}", ca_file.display()))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match identity {
        Some((cert, key)) => {
            let identity = read_identity("cert", cert, "key", key).map_err(|e| e.reason)?;
            builder
                .with_client_auth_cert(identity.cert_chain, identity.key)
                .map_err(|e| e.to_string())
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Files written by [`write_throwaway_pki`].
#[derive(Clone, Debug)]
pub struct ThrowawayPki {
    /// The CA certificate (its key is never written: nothing more can be signed with it).
    pub ca_file: PathBuf,
    /// Per node, in order: (certificate file, key file).
    pub nodes: Vec<(PathBuf, PathBuf)>,
}

/// Writes a throwaway CA certificate and, for each name in `nodes`, a certificate signed by it
/// for `localhost` and `127.0.0.1` that serves both as a server and as a client certificate (a
/// node uses one for its client port and its peer links). For `local-cluster --tls` and tests;
/// production certificates come from the operator's own CA (node/README.md shows `openssl`).
pub fn write_throwaway_pki(dir: &Path, nodes: &[String]) -> Result<ThrowawayPki, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let failed = |e: rcgen::Error| format!("cannot generate a certificate: {e}");
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ca_key = KeyPair::generate().map_err(failed)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A name of its own, so a certificate of another throwaway CA is reported as signed by an
    // unknown issuer rather than as a bad signature of this one.
    let tag = rand::RngCore::next_u64(&mut rand::rngs::OsRng);
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("ringkv throwaway CA {tag:016x}"),
    );
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).map_err(failed)?;
    let ca_file = dir.join("ca.pem");
    write_file(&ca_file, ca.pem().as_bytes(), false)?;
    let mut files = Vec::new();
    for name in nodes {
        let key = KeyPair::generate().map_err(failed)?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .map_err(failed)?;
        params
            .distinguished_name
            .push(DnType::CommonName, name.as_str());
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(failed)?;
        let cert_file = dir.join(format!("{name}.pem"));
        let key_file = dir.join(format!("{name}.key"));
        write_file(&cert_file, cert.pem().as_bytes(), false)?;
        write_file(&key_file, key.serialize_pem().as_bytes(), true)?;
        files.push((cert_file, key_file));
    }
    Ok(ThrowawayPki {
        ca_file,
        nodes: files,
    })
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two throwaway PKIs in one directory: `a` (the cluster's) and `b` (a stranger's).
    fn two_pkis(dir: &Path) -> (ThrowawayPki, ThrowawayPki) {
        let a = write_throwaway_pki(&dir.join("a"), &["n1".into(), "n2".into()]).expect("a");
        let b = write_throwaway_pki(&dir.join("b"), &["rogue".into()]).expect("b");
        (a, b)
    }

    fn peer_file(pki: &ThrowawayPki, node: usize, ca: &Path) -> TlsFile {
        TlsFile {
            peer_cert_file: Some(pki.nodes[node].0.clone()),
            peer_key_file: Some(pki.nodes[node].1.clone()),
            ca_file: Some(ca.to_path_buf()),
            ..TlsFile::default()
        }
    }

    /// The field and reason of a validation error (panics if the file is valid).
    fn refusal(file: &TlsFile) -> (String, String) {
        let e = file.validate().expect_err("refused");
        (e.field, e.reason)
    }

    #[test]
    fn a_complete_table_validates_and_builds_both_halves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, _) = two_pkis(dir.path());
        let file = TlsFile {
            client_cert_file: Some(a.nodes[0].0.clone()),
            client_key_file: Some(a.nodes[0].1.clone()),
            client_certificates_required: Some(true),
            ..peer_file(&a, 0, &a.ca_file)
        };
        let settings = file.validate().expect("valid").expect("some");
        assert!(settings.client_certificates_required);
        let runtime = settings.runtime().expect("builds");
        assert!(runtime.clients.is_some() && runtime.peers.is_some());
        assert_eq!(TlsFile::default().validate().expect("valid"), None);
    }

    #[test]
    fn each_bad_file_is_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = two_pkis(dir.path());
        let missing = dir.path().join("nowhere.pem");
        let not_pem = dir.path().join("garbage.pem");
        std::fs::write(&not_pem, "this is not a certificate\n").expect("write");

        let (field, reason) = refusal(&TlsFile {
            peer_cert_file: Some(missing.clone()),
            ..peer_file(&a, 0, &a.ca_file)
        });
        assert_eq!(field, "tls.peer_cert_file");
        assert!(
            reason.contains("nowhere.pem") && reason.contains("missing"),
            "{reason}"
        );

        let (field, reason) = refusal(&TlsFile {
            peer_cert_file: Some(not_pem.clone()),
            ..peer_file(&a, 0, &a.ca_file)
        });
        assert_eq!(field, "tls.peer_cert_file");
        assert!(reason.contains("no PEM certificate"), "{reason}");

        let (field, reason) = refusal(&TlsFile {
            peer_key_file: Some(not_pem),
            ..peer_file(&a, 0, &a.ca_file)
        });
        assert_eq!(field, "tls.peer_key_file");
        assert!(reason.contains("no PEM private key"), "{reason}");

        // A certificate file given as the key: PEM, but no key in it.
        let (field, _) = refusal(&TlsFile {
            peer_key_file: Some(a.nodes[0].0.clone()),
            ..peer_file(&a, 0, &a.ca_file)
        });
        assert_eq!(field, "tls.peer_key_file");

        let (field, reason) = refusal(&TlsFile {
            peer_key_file: Some(a.nodes[1].1.clone()),
            ..peer_file(&a, 0, &a.ca_file)
        });
        assert_eq!(field, "tls.peer_key_file");
        assert!(reason.contains("does not match"), "{reason}");

        let (field, reason) = refusal(&peer_file(&b, 0, &a.ca_file));
        assert_eq!(field, "tls.peer_cert_file");
        assert!(reason.contains("not accepted by tls.ca_file"), "{reason}");

        let (field, _) = refusal(&peer_file(&a, 0, &missing));
        assert_eq!(field, "tls.ca_file");
    }

    #[test]
    fn incomplete_tables_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, _) = two_pkis(dir.path());
        let cases = [
            (
                TlsFile {
                    ca_file: None,
                    ..peer_file(&a, 0, &a.ca_file)
                },
                "tls.ca_file",
            ),
            (
                TlsFile {
                    peer_key_file: None,
                    ..peer_file(&a, 0, &a.ca_file)
                },
                "tls.peer_key_file",
            ),
            (
                TlsFile {
                    client_key_file: Some(a.nodes[0].1.clone()),
                    ..TlsFile::default()
                },
                "tls.client_cert_file",
            ),
            (
                TlsFile {
                    client_certificates_required: Some(true),
                    ..peer_file(&a, 0, &a.ca_file)
                },
                "tls.client_certificates_required",
            ),
            (
                TlsFile {
                    ca_file: Some(a.ca_file.clone()),
                    ..TlsFile::default()
                },
                "tls.client_cert_file",
            ),
        ];
        for (file, field) in cases {
            assert_eq!(refusal(&file).0, field, "{file:?}");
        }
    }

    #[test]
    fn the_node_file_reads_the_tls_table_and_names_its_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, _) = two_pkis(dir.path());
        let text = format!(
            "node_id = 1\n[tls]\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            a.nodes[0].0.display(),
            a.nodes[0].1.display()
        );
        let settings = crate::config::FileConfig::parse(&text)
            .and_then(|f| f.validate())
            .expect("valid");
        let tls = settings.tls.expect("tls");
        assert!(tls.client.is_some() && tls.peer.is_none());
        let unknown = crate::config::FileConfig::parse("node_id = 1\n[tls]\nca = \"x\"\n")
            .expect_err("unknown key");
        assert_eq!(unknown.field, "tls.ca");
        let plain = crate::config::FileConfig::parse("node_id = 1\n")
            .and_then(|f| f.validate())
            .expect("valid");
        assert_eq!(plain.tls, None);
    }

    #[test]
    fn server_names_come_from_the_address_host() {
        assert_eq!(
            server_name_of("127.0.0.1:7380").expect("ip"),
            ServerName::try_from("127.0.0.1").expect("name")
        );
        assert_eq!(
            server_name_of("[::1]:7380").expect("v6"),
            ServerName::try_from("::1").expect("name")
        );
        assert_eq!(
            server_name_of("node-2.example:7380").expect("dns"),
            ServerName::try_from("node-2.example").expect("name")
        );
        assert!(server_name_of("bad name!:1").is_err());
    }

    async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        s: &mut S,
        first: bool,
    ) -> Result<(), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut byte = [0u8; 1];
        if !first {
            s.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        }
        s.write_all(b"x").await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        if first {
            s.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Drives a TLS handshake over an in-memory pipe: the dialer's and the acceptor's results.
    async fn handshake(
        dialer: &TlsRuntime,
        acceptor: &TlsRuntime,
    ) -> (Result<(), String>, Result<(), String>) {
        let (a, b) = tokio::io::duplex(64 << 10);
        let connector = dialer.peers.as_ref().expect("peer tls").connector.clone();
        let acceptor = acceptor.peers.as_ref().expect("peer tls").acceptor.clone();
        let name = server_name_of("127.0.0.1:1").expect("name");
        // One byte each way, so neither side drops its end while the other still writes.
        let dial = async move {
            let mut s = connector
                .connect(name, a)
                .await
                .map_err(|e| e.to_string())?;
            echo(&mut s, true).await
        };
        let accept = async move {
            let mut s = acceptor.accept(b).await.map_err(|e| e.to_string())?;
            echo(&mut s, false).await
        };
        tokio::join!(dial, accept)
    }

    #[tokio::test]
    async fn peers_accept_each_other_and_refuse_a_certificate_from_another_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = two_pkis(dir.path());
        let runtime = |file: TlsFile| {
            file.validate()
                .expect("valid")
                .expect("some")
                .runtime()
                .expect("builds")
        };
        let n1 = runtime(peer_file(&a, 0, &a.ca_file));
        let n2 = runtime(peer_file(&a, 1, &a.ca_file));
        let (dialed, accepted) = handshake(&n1, &n2).await;
        assert_eq!((dialed, accepted), (Ok(()), Ok(())));

        // A stranger that trusts our CA but holds a certificate of its own CA: the acceptor
        // refuses its client certificate.
        // (Built past validation, which would refuse a certificate its own CA did not sign.)
        let rogue = TlsSettings {
            client: None,
            peer: Some(read_identity("c", &b.nodes[0].0, "k", &b.nodes[0].1).expect("identity")),
            ca: read_certificates("ca", &a.ca_file).expect("ca"),
            client_certificates_required: false,
        }
        .runtime()
        .expect("builds");
        let (_, accepted) = handshake(&rogue, &n2).await;
        let why = accepted.expect_err("refused");
        assert!(
            why.contains("UnknownIssuer") || why.contains("certificate"),
            "{why}"
        );
        // And a node dialing the stranger refuses the stranger's server certificate.
        let (dialed, _) = handshake(&n1, &rogue).await;
        let why = dialed.expect_err("refused");
        assert!(why.contains("UnknownIssuer"), "{why}");
    }
}
