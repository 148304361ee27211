//! SplitMix64: a tiny deterministic generator shared by `tests/soak.rs` and
//! `tests/memory_bound.rs` (the tokens and choices need not be secure, only reproducible and
//! distinct). Included by `#[path]`; not every test uses every method.

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[derive(Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `oat_` + `first` + 42 random base64url characters: shaped like a Wacht token.
    pub fn token(&mut self, first: u8) -> String {
        let mut t = String::with_capacity(47);
        t.push_str("oat_");
        t.push(char::from(first));
        let mut bits = 0u64;
        let mut left = 0;
        for _ in 0..42 {
            if left == 0 {
                bits = self.next();
                left = 10;
            }
            t.push(char::from(BASE64URL[(bits & 63) as usize]));
            bits >>= 6;
            left -= 1;
        }
        t
    }
}
