//! The one stable hash kubundle writes into the cluster: 64-bit FNV-1a, the hash Kubernetes
//! names its pod templates and revisions with. Every value derived from it (the configuration
//! digest on pod templates, revision names, the children's `kubundle.dev/rendered-hash`) must stay
//! the same across kubundle versions and Rust toolchains, or an upgrade would see every object as
//! changed; `std::hash::DefaultHasher` promises no such thing.

/// An FNV-1a (64 bit) hasher.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Feeds `bytes` as they are.
    pub fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Feeds a length-prefixed field, so that ("ab", "c") and ("a", "bc") differ.
    pub fn field(&mut self, bytes: &[u8]) {
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }

    /// The hash so far, as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The 64-bit FNV-1a hash of `bytes`, as 16 hex digits.
pub fn fnv_hex(bytes: &[u8]) -> String {
    let mut h = Fnv::default();
    h.bytes(bytes);
    h.hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_pinned() {
        // the published FNV-1a 64 test vectors: a new kubundle must hash as the last one did
        assert_eq!(fnv_hex(b""), "cbf29ce484222325");
        assert_eq!(fnv_hex(b"a"), "af63dc4c8601ec8c");
        assert_eq!(fnv_hex(b"foobar"), "85944171f73967e8");
        let mut h = Fnv::default();
        h.field(b"ab");
        h.field(b"c");
        let mut g = Fnv::default();
        g.field(b"a");
        g.field(b"bc");
        assert_ne!(h.hex(), g.hex());
    }
}
