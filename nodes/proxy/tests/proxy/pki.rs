//! A throwaway PKI for the TLS tests, made with rcgen at run time (nothing secret is checked
//! in, and nothing expires): a CA, a server certificate for `localhost` and `127.0.0.1`
//! signed by it, a client certificate signed by it, and a client certificate signed by
//! another CA (one the proxy does not trust). PEM files in a temporary directory.
//!
//! Shared by `larder-proxy`'s TLS tests and `larder`'s end-to-end one (included by path).

// Included by several test binaries, each of which uses only some of it.
#![allow(dead_code)]

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub struct Pki {
    /// Where the files are (every path below is in it); removed on drop.
    _dir: tempfile::TempDir,
    /// The CA the proxy trusts for client certificates, and clients trust for the server's.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate signed by a CA the proxy does not trust.
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("self-signed CA");
    (cert, Issuer::new(params, key))
}

fn leaf(
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, "larder test");
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).expect("signed leaf");
    (cert, key)
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        let (ca_cert, issuer) = ca("Larder test CA");
        let (server, server_key) = leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        );
        let (client, client_key) = leaf(&[], ExtendedKeyUsagePurpose::ClientAuth, &issuer);
        let (_, rogue_issuer) = ca("Not the proxy's CA");
        let (rogue, rogue_key) = leaf(&[], ExtendedKeyUsagePurpose::ClientAuth, &rogue_issuer);
        Pki {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            rogue_cert: write("rogue.pem", rogue.pem()),
            rogue_key: write("rogue.key", rogue_key.serialize_pem()),
            _dir: dir,
        }
    }
}
