//! One question to one server, without recursion: the exchange the authoritative vantage
//! uses (design §6). UDP first, TCP when the answer comes back truncated; the reply must be
//! a response to this very question (same id, name and type) from the server asked.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_resolver::proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::DnsError;

/// The UDP payload size advertised with EDNS (the DNS flag day 2020 value): larger answers
/// come truncated and are asked again over TCP.
const EDNS_PAYLOAD: u16 = 1_232;
/// Receive buffer for one UDP reply; anything longer than the advertised size is cut here.
const UDP_BUFFER: usize = 4_096;
/// Datagrams that are not the reply (a late answer to an earlier query, noise) read before
/// giving up on a server.
const MAX_STRAY_DATAGRAMS: usize = 16;

/// The question as a query message with recursion not desired.
fn question(name: &Name, record_type: RecordType) -> Message {
    let mut message = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = false;
    message.add_query(Query::query(name.clone(), record_type));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    message.set_edns(edns);
    message
}

/// Whether `reply` answers `request`.
fn answers(request: &Message, reply: &Message) -> bool {
    reply.metadata.message_type == MessageType::Response
        && reply.metadata.id == request.metadata.id
        && match (request.queries.first(), reply.queries.first()) {
            // Names compare without case (RFC 4343).
            (Some(asked), Some(answered)) => {
                asked.query_type() == answered.query_type() && asked.name() == answered.name()
            }
            _ => false,
        }
}

/// Asks `server` one question, within `timeout` per transport.
pub(super) async fn ask(
    server: SocketAddr,
    name: &Name,
    record_type: RecordType,
    timeout: Duration,
) -> Result<Message, DnsError> {
    let request = question(name, record_type);
    let wire = request
        .to_vec()
        .map_err(|e| DnsError::Other(format!("encoding the query: {e}")))?;
    let reply = tokio::time::timeout(timeout, over_udp(server, &request, &wire))
        .await
        .map_err(|_| DnsError::Timeout)??;
    if !reply.metadata.truncation {
        return Ok(reply);
    }
    tokio::time::timeout(timeout, over_tcp(server, &request, &wire))
        .await
        .map_err(|_| DnsError::Timeout)?
}

fn io_error(server: SocketAddr) -> impl Fn(std::io::Error) -> DnsError {
    move |e| DnsError::Other(format!("asking {server}: {e}"))
}

async fn over_udp(server: SocketAddr, request: &Message, wire: &[u8]) -> Result<Message, DnsError> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io_error(server))?;
    // A connected socket takes datagrams from the server only.
    socket.connect(server).await.map_err(io_error(server))?;
    socket.send(wire).await.map_err(io_error(server))?;
    let mut buffer = vec![0u8; UDP_BUFFER];
    for _ in 0..MAX_STRAY_DATAGRAMS {
        let len = socket.recv(&mut buffer).await.map_err(io_error(server))?;
        if let Ok(reply) = Message::from_vec(&buffer[..len])
            && answers(request, &reply)
        {
            return Ok(reply);
        }
    }
    Err(DnsError::Other(format!("{server} sent no matching reply")))
}

async fn over_tcp(server: SocketAddr, request: &Message, wire: &[u8]) -> Result<Message, DnsError> {
    let length = u16::try_from(wire.len())
        .map_err(|_| DnsError::Other("query too long for TCP".to_string()))?;
    let mut stream = TcpStream::connect(server).await.map_err(io_error(server))?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(wire);
    stream.write_all(&framed).await.map_err(io_error(server))?;
    let mut length = [0u8; 2];
    stream
        .read_exact(&mut length)
        .await
        .map_err(io_error(server))?;
    // At most 65,535 bytes: the length prefix bounds the read.
    let mut buffer = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream
        .read_exact(&mut buffer)
        .await
        .map_err(io_error(server))?;
    match Message::from_vec(&buffer) {
        Ok(reply) if answers(request, &reply) => Ok(reply),
        Ok(_) => Err(DnsError::Other(format!("{server} sent no matching reply"))),
        Err(e) => Err(DnsError::Other(format!(
            "{server} sent a malformed reply: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).expect("name")
    }

    #[test]
    fn the_question_asks_for_no_recursion() {
        let message = question(&name("customer.example."), RecordType::TXT);
        assert!(!message.metadata.recursion_desired);
        assert_eq!(message.queries.len(), 1);
        assert_eq!(message.max_payload(), EDNS_PAYLOAD);
    }

    #[test]
    fn only_a_response_to_the_same_question_answers() {
        let request = question(&name("customer.example."), RecordType::TXT);
        let mut reply = Message::response(request.metadata.id, OpCode::Query);
        reply.add_query(Query::query(name("CUSTOMER.example."), RecordType::TXT));
        assert!(answers(&request, &reply), "names compare without case");

        let mut other_id = reply.clone();
        other_id.metadata.id = request.metadata.id.wrapping_add(1);
        assert!(!answers(&request, &other_id));

        let mut other_type = Message::response(request.metadata.id, OpCode::Query);
        other_type.add_query(Query::query(name("customer.example."), RecordType::A));
        assert!(!answers(&request, &other_type));

        let mut other_name = Message::response(request.metadata.id, OpCode::Query);
        other_name.add_query(Query::query(name("other.example."), RecordType::TXT));
        assert!(!answers(&request, &other_name));

        let mut query = reply.clone();
        query.metadata.message_type = MessageType::Query;
        assert!(!answers(&request, &query), "a query is no reply");

        let empty = Message::response(request.metadata.id, OpCode::Query);
        assert!(!answers(&request, &empty));
    }
}
