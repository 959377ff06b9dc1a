//! Lease tokens and the fence inside them.

use super::{InvalidRequest, TOKEN_HEX_LEN};

/// A token as granted by the server: 32 hex characters, stored inline so
/// handles and replies carry it without allocating.
///
/// On 2.x servers the first 16 hex characters are a big-endian `u64` fence
/// that rises by one on every grant; on 1.10 all 32 are random.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token([u8; TOKEN_HEX_LEN]);

impl Token {
    /// Parse a token exactly as a server sends it: 32 lower-case hex
    /// characters (the protocol's grammar; anything else in a reply is a
    /// protocol error, not a credential to send back).
    pub fn parse(s: &str) -> Result<Token, InvalidRequest> {
        let b = s.as_bytes();
        if b.len() != TOKEN_HEX_LEN {
            return Err(InvalidRequest(format!(
                "token must be {TOKEN_HEX_LEN} hex characters, got {}",
                b.len()
            )));
        }
        if !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(InvalidRequest("token is not lower-case hexadecimal".into()));
        }
        let mut raw = [0u8; TOKEN_HEX_LEN];
        raw.copy_from_slice(b);
        Ok(Token(raw))
    }

    /// Build a token from a fence and 64 random bits (the test server's
    /// grants), lower-case hex as the Go server writes it.
    pub fn from_parts(fence: u64, random: u64) -> Token {
        let s = format!("{fence:016x}{random:016x}");
        let mut raw = [0u8; TOKEN_HEX_LEN];
        raw.copy_from_slice(s.as_bytes());
        Token(raw)
    }

    /// The token's 32 hex digits.
    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII hex digits.
        std::str::from_utf8(&self.0).expect("token is ASCII")
    }

    /// The 64-bit fence prefix (see [`fence_from_token`]).
    pub fn fence(&self) -> u64 {
        u64::from_str_radix(&self.as_str()[..16], 16).expect("token is hex")
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Debug never prints a whole token: tokens are credentials for release.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}...)", &self.as_str()[..8])
    }
}

/// Decode the fence (the first 16 hex characters, big-endian `u64`) of a
/// token. On 2.x servers the fence strictly rises with every grant, so a
/// resource that remembers the highest fence it saw per key can reject
/// writes from a holder whose lease was lost. Compare fences per key only.
/// Upper-case hex is accepted here, as `fence_from_token` in the other
/// clients does (a token may have passed through other hands).
pub fn fence_from_token(token: &str) -> Result<u64, InvalidRequest> {
    Token::parse(&token.to_ascii_lowercase()).map(|t| t.fence())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_of_transcript_token() {
        // docs/transcripts/server-2.x.log, fence monotonicity section.
        assert_eq!(
            fence_from_token("18eb813dca7f8502533e7c4ee43322ea"),
            Ok(0x18eb813dca7f8502)
        );
        assert_eq!(fence_from_token("ffffffffffffffff0000000000000000"), Ok(u64::MAX));
        assert_eq!(fence_from_token("FFFFFFFFFFFFFFFF0000000000000000"), Ok(u64::MAX));
    }

    #[test]
    fn rejects_bad_tokens() {
        assert!(fence_from_token("").is_err());
        assert!(fence_from_token("18eb813dca7f8502533e7c4ee43322e").is_err());
        assert!(fence_from_token("18eb813dca7f8502533e7c4ee43322eaa").is_err());
        assert!(fence_from_token("18eb813dca7f8502533e7c4ee43322eg").is_err());
        assert!(fence_from_token("+8eb813dca7f8502533e7c4ee43322ea").is_err());
        assert!(fence_from_token("é8eb813dca7f8502533e7c4ee43322e").is_err());
    }

    #[test]
    fn a_reply_token_must_be_lower_case() {
        assert!(Token::parse("18eb813dca7f8502533e7c4ee43322ea").is_ok());
        assert!(Token::parse("18EB813DCA7F8502533E7C4EE43322EA").is_err());
        assert!(Token::parse("18eb813dca7f8502533e7c4ee43322eA").is_err());
    }

    #[test]
    fn from_parts_is_lower_hex_and_ordered() {
        let t = Token::from_parts(0x18eb813dca7f8502, 0xdead);
        assert_eq!(t.as_str(), "18eb813dca7f8502000000000000dead");
        assert_eq!(t.fence(), 0x18eb813dca7f8502);
        assert!(!format!("{t:?}").contains("dead"));
    }
}
