//! Password hashing with Argon2id: the only place a plaintext password is handled.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand_core::OsRng;

pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Hashes `password` with a fresh salt; the result is what the database stores.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    let password_hash = Argon2::default().hash_password(password.as_bytes(), &salt)?;
    Ok(password_hash.to_string())
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    let parsed = match PasswordHash::new(stored) {
        Ok(parsed) => parsed,
        Err(_) => return false,
    };
    let secret_bytes = password.as_bytes();
    Argon2::default().verify_password(secret_bytes, &parsed).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let password = "correct horse battery staple";
        let token = super::hash_password(password).unwrap();
        assert!(super::verify_password(password, &token));
        let api_key: Option<&str> = None;
        assert!(api_key.is_none());
    }
}
