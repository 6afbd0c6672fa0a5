//! bk-ci's `AESUtil`, for reading what bk-ci encrypted (pipeline-level tokens, the global rows'
//! `SECRET_PARAM`): AES-256-CBC with PKCS#7 padding and an all-zero IV, Base64 outside, and a
//! key derived from the configured string the way Java's `KeyGenerator("AES")` does when seeded
//! through a `SHA1PRNG` `SecureRandom`.

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockModeDecrypt, KeyIvInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

/// Why a value did not decrypt.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Undecryptable {
    #[error("not Base64")]
    NotBase64,
    #[error("does not decrypt with this key (wrong key or not encrypted)")]
    WrongKey,
    #[error("decrypts to bytes that are not UTF-8 (wrong key?)")]
    NotText,
}

/// bk-ci's cipher for one key string (`project.callback.aes-key`).
pub struct BkciCipher {
    key: [u8; 32],
}

impl BkciCipher {
    pub fn new(key: &str) -> Self {
        Self {
            key: derive_key(key),
        }
    }

    pub fn decrypt(&self, encrypted: &str) -> Result<String, Undecryptable> {
        let bytes = BASE64
            .decode(encrypted.trim())
            .map_err(|_| Undecryptable::NotBase64)?;
        let plain = cbc::Decryptor::<aes::Aes256>::new(&self.key.into(), &[0u8; 16].into())
            .decrypt_padded_vec::<Pkcs7>(&bytes)
            .map_err(|_| Undecryptable::WrongKey)?;
        String::from_utf8(plain).map_err(|_| Undecryptable::NotText)
    }
}

/// The 32 bytes Java's SUN `SHA1PRNG`, seeded with the key string's UTF-8 bytes, hands
/// `KeyGenerator.init(256, …)`: two output blocks, the second cut to 12 bytes.
fn derive_key(key: &str) -> [u8; 32] {
    let mut state: [u8; 20] = Sha1::digest(key.as_bytes()).into();
    let mut derived = [0u8; 32];
    for chunk in derived.chunks_mut(20) {
        let output: [u8; 20] = Sha1::digest(state).into();
        next_state(&mut state, &output);
        chunk.copy_from_slice(&output[..chunk.len()]);
    }
    derived
}

/// `SecureRandom`'s state update: state + output + 1 as one little-endian number of signed
/// bytes, carrying arithmetically; a state that would not change is bumped instead.
fn next_state(state: &mut [u8; 20], output: &[u8; 20]) {
    let mut carry: i32 = 1;
    let mut changed = false;
    for (s, o) in state.iter_mut().zip(output) {
        let sum = i32::from(*s as i8) + i32::from(*o as i8) + carry;
        let byte = sum.to_le_bytes()[0];
        changed |= *s != byte;
        *s = byte;
        carry = sum >> 8;
    }
    if !changed {
        state[0] = state[0].wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The reference's vectors (JDK 17 `KeyGenerator`/`SHA1PRNG` with AES/CBC/PKCS5, zero IV).
    #[test]
    fn keys_derive_as_java_does() {
        for (key, derived) in [
            (
                "bkci-callback-aes-key",
                "665e114837f2c4a1d714133f6ace6b4fecbe36d105cbf988d25b291586f4d6b7",
            ),
            (
                "abc",
                "0d3ced9bec10a777aec23ccc353a8c08a633045e09554bc3702aec7d7b6e0f28",
            ),
            (
                "x",
                "b69027d44f6e5edc07f1aead1477967b16f28227af4fff79ed0b192725fcde60",
            ),
        ] {
            assert_eq!(hex(&derive_key(key)), derived, "{key}");
        }
    }

    #[test]
    fn bkci_ciphertexts_decrypt() {
        assert_eq!(
            BkciCipher::new("bkci-callback-aes-key").decrypt("uMPAbnziAlf8MlaMrjjh6w=="),
            Ok("my-secret-token".to_owned())
        );
        assert_eq!(
            BkciCipher::new("abc")
                .decrypt("169XMoy+aj2Qjb5UnrbHHhX/8i0Gh4bwCT/shLjQ3WUbWcEVrjM0cXoIRzc+TVu6"),
            Ok(r#"{"@type":"header","headers":{"X-Auth":"v1"}}"#.to_owned())
        );
    }

    #[test]
    fn a_wrong_key_or_plaintext_is_refused() {
        let cipher = BkciCipher::new("not-the-key");
        assert!(cipher.decrypt("uMPAbnziAlf8MlaMrjjh6w==").is_err());
        assert_eq!(
            cipher.decrypt("plain token!"),
            Err(Undecryptable::NotBase64)
        );
    }
}
