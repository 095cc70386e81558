//! Builders for RTMP protocol control, user control and command messages.

use bytes::Bytes;
use sluice_container::amf0::{encode_all, Amf0Value};

use crate::chunk::{types, ChunkEncoder};

/// Chunk stream ids Sluice sends on.
pub const CSID_CONTROL: u32 = 2;
pub const CSID_COMMAND: u32 = 3;
pub const CSID_AUDIO: u32 = 4;
pub const CSID_STREAM: u32 = 5;
pub const CSID_VIDEO: u32 = 6;
/// The one message stream id handed out by `createStream`.
pub const STREAM_ID: u32 = 1;

pub const USER_STREAM_BEGIN: u16 = 0;
pub const USER_STREAM_EOF: u16 = 1;
pub const USER_PING_REQUEST: u16 = 6;
pub const USER_PING_RESPONSE: u16 = 7;

pub fn set_chunk_size(enc: &ChunkEncoder, size: u32) -> Bytes {
    enc.encode_to_bytes(CSID_CONTROL, 0, types::SET_CHUNK_SIZE, 0, &size.to_be_bytes())
}

pub fn window_ack_size(enc: &ChunkEncoder, size: u32) -> Bytes {
    enc.encode_to_bytes(CSID_CONTROL, 0, types::WINDOW_ACK_SIZE, 0, &size.to_be_bytes())
}

pub fn set_peer_bandwidth(enc: &ChunkEncoder, size: u32) -> Bytes {
    let mut p = size.to_be_bytes().to_vec();
    p.push(2); // dynamic
    enc.encode_to_bytes(CSID_CONTROL, 0, types::SET_PEER_BANDWIDTH, 0, &p)
}

pub fn ack(enc: &ChunkEncoder, sequence: u32) -> Bytes {
    enc.encode_to_bytes(CSID_CONTROL, 0, types::ACK, 0, &sequence.to_be_bytes())
}

pub fn user_control(enc: &ChunkEncoder, event: u16, data: u32) -> Bytes {
    let mut p = event.to_be_bytes().to_vec();
    p.extend_from_slice(&data.to_be_bytes());
    enc.encode_to_bytes(CSID_CONTROL, 0, types::USER_CONTROL, 0, &p)
}

pub fn command(enc: &ChunkEncoder, csid: u32, stream_id: u32, values: &[Amf0Value]) -> Bytes {
    enc.encode_to_bytes(csid, 0, types::COMMAND_AMF0, stream_id, &encode_all(values))
}

pub fn data(enc: &ChunkEncoder, stream_id: u32, timestamp: u32, values: &[Amf0Value]) -> Bytes {
    enc.encode_to_bytes(
        CSID_STREAM,
        timestamp,
        types::DATA_AMF0,
        stream_id,
        &encode_all(values),
    )
}

/// `onStatus` on the media stream, e.g. `NetStream.Publish.Start`.
pub fn on_status(enc: &ChunkEncoder, level: &str, code: &str, description: &str) -> Bytes {
    let info = Amf0Value::object([
        ("level", Amf0Value::string(level)),
        ("code", Amf0Value::string(code)),
        ("description", Amf0Value::string(description)),
    ]);
    command(
        enc,
        CSID_STREAM,
        STREAM_ID,
        &[
            Amf0Value::string("onStatus"),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
            info,
        ],
    )
}

/// `_result` or `_error` for a transaction.
pub fn result(enc: &ChunkEncoder, ok: bool, txn: f64, props: Amf0Value, info: Amf0Value) -> Bytes {
    let name = if ok { "_result" } else { "_error" };
    command(
        enc,
        CSID_COMMAND,
        0,
        &[Amf0Value::string(name), Amf0Value::Number(txn), props, info],
    )
}
