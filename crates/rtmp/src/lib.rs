//! RTMP and enhanced RTMP: handshake, chunk stream, AMF0 commands, server sessions.
