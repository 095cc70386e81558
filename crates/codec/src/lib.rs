//! Sans-IO codec bitstream helpers: configuration records, NAL framing, audio headers.
