//! Recognises a TLS ClientHello at the start of a socket's bytes and reads
//! its server name (SNI), with the `tls-parser` crate.

use tls_parser::{
    SNIType, TlsExtension, TlsMessage, TlsMessageHandshake, parse_tls_extensions,
    parse_tls_plaintext,
};

/// Record type of a TLS handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;

/// What the probe keeps of a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` entry of the server_name extension.
    pub server_name: Option<String>,
}

/// Returns the ClientHello that `bytes` start with, or `None` when they do
/// not start with one. A ClientHello cut short by the capture limit is still
/// recognised, without its server name.
pub fn client_hello(bytes: &[u8]) -> Option<ClientHello> {
    // Record header: type, legacy version 3.x, length; then the handshake
    // type. Checking these first keeps the parser away from plain HTTP.
    let [record_type, 3, minor, _, _, handshake_type, ..] = bytes else {
        return None;
    };
    if *record_type != HANDSHAKE_RECORD || *minor > 4 || *handshake_type != CLIENT_HELLO {
        return None;
    }
    Some(ClientHello {
        server_name: server_name(bytes),
    })
}

fn server_name(bytes: &[u8]) -> Option<String> {
    let (_, record) = parse_tls_plaintext(bytes).ok()?;
    let hello = record.msg.iter().find_map(|message| match message {
        TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) => Some(hello),
        _ => None,
    })?;
    let (_, extensions) = parse_tls_extensions(hello.ext?).ok()?;
    extensions.iter().find_map(|extension| match extension {
        TlsExtension::SNI(names) => names
            .iter()
            .find(|(kind, _)| *kind == SNIType::HostName)
            .and_then(|(_, name)| std::str::from_utf8(name).ok())
            .map(str::to_string),
        _ => None,
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Builds a TLS 1.2-style ClientHello record with one SNI host name.
    pub fn client_hello_with_sni(host: &str) -> Vec<u8> {
        let name = host.as_bytes();
        let mut server_name = Vec::new();
        server_name.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        server_name.push(0); // host_name
        server_name.extend_from_slice(&(name.len() as u16).to_be_bytes());
        server_name.extend_from_slice(name);
        let mut extensions = vec![0, 0]; // server_name
        extensions.extend_from_slice(&(server_name.len() as u16).to_be_bytes());
        extensions.extend_from_slice(&server_name);

        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(&extensions);

        let mut handshake = vec![CLIENT_HELLO];
        handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        let mut record = vec![HANDSHAKE_RECORD, 3, 1];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    #[test]
    fn server_name_is_read() {
        let hello = client_hello(&client_hello_with_sni("api.openai.com")).unwrap();
        assert_eq!(hello.server_name.as_deref(), Some("api.openai.com"));
    }

    #[test]
    fn truncated_hello_is_tls_without_name() {
        let bytes = client_hello_with_sni("api.anthropic.com");
        let hello = client_hello(&bytes[..40]).unwrap();
        assert_eq!(hello.server_name, None);
    }

    #[test]
    fn http_and_application_data_are_not_hellos() {
        assert_eq!(
            client_hello(b"POST /v1/chat/completions HTTP/1.1\r\n"),
            None
        );
        assert_eq!(client_hello(&[0x17, 3, 3, 0, 5, 1, 2, 3, 4, 5]), None);
        assert_eq!(client_hello(&[0x16, 3]), None);
    }
}
