//! Sans-IO container formats: FLV (and AMF0), MPEG-TS and fMP4/CMAF, read and written from the
//! media core's types. No I/O: callers hand in bytes and get bytes back.
