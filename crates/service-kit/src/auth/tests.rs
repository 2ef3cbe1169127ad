use std::time::Duration;

use base64::Engine;
use clap::Parser;

use super::*;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    auth: AuthConfig,
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cap-auth-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A service's authenticator and an issuer of tokens it accepts.
fn setup(extra: &[&str]) -> (Authenticator, TokenIssuer) {
    let keys = DevKeys::ensure(&temp_dir()).expect("dev keys");
    let key = keys.verifying_key.to_string_lossy().into_owned();
    let mut args = vec!["svc", "--auth-verifying-key-file", &key];
    args.extend_from_slice(extra);
    let config = Flags::parse_from(args).auth;
    let auth = Authenticator::from_config(&config, "test").expect("authenticator");
    let issuer = TokenIssuer::from_pem_file(&keys.signing_key, "cap-services", "cap-services")
        .expect("issuer");
    (auth, issuer)
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).expect("header")
}

fn reason(result: Result<Caller, AuthError>) -> String {
    match result {
        Err(AuthError::Unauthenticated { reason, .. }) => reason,
        other => panic!("expected 401, got {other:?}"),
    }
}

#[test]
fn a_valid_token_names_its_subject_and_scopes() {
    let (auth, issuer) = setup(&[]);
    let token = issuer.mint("alice", &["inventory:admin"], Duration::from_secs(60));
    let caller = auth.verify(Some(&bearer(&token))).expect("valid");
    assert_eq!(caller.subject, "alice");
    assert!(caller.has_scope("inventory:admin"));
    assert!(caller.require_scope("other").is_err());
    assert!(caller.require_subject("bob", "post").is_err());
    assert!(caller.require_subject("alice", "post").is_ok());
}

#[test]
fn missing_and_malformed_tokens_are_refused() {
    let (auth, _) = setup(&[]);
    assert_eq!(reason(auth.verify(None)), "");
    assert!(reason(auth.verify(Some(&HeaderValue::from_static("Basic abc")))).contains("Bearer"));
    assert!(reason(auth.verify(Some(&bearer("not.a.jwt")))).contains("well-formed"));
}

#[test]
fn expired_foreign_and_unsigned_tokens_are_refused() {
    let (auth, issuer) = setup(&["--auth-leeway-secs", "0"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = |exp: u64, iss: &str, aud: &str| Claims {
        sub: "alice".into(),
        exp,
        iat: now,
        iss: iss.into(),
        aud: aud.into(),
        scope: String::new(),
    };
    let expired = issuer.mint_claims(&claims(now - 10, "cap-services", "cap-services"));
    assert!(reason(auth.verify(Some(&bearer(&expired)))).contains("expired"));
    let audience = issuer.mint_claims(&claims(now + 60, "cap-services", "elsewhere"));
    assert!(reason(auth.verify(Some(&bearer(&audience)))).contains("audience"));
    let foreign_issuer = issuer.mint_claims(&claims(now + 60, "elsewhere", "cap-services"));
    assert!(reason(auth.verify(Some(&bearer(&foreign_issuer)))).contains("issuer"));

    // Signed with another key pair.
    let (_, stranger) = setup(&[]);
    let forged = stranger.mint("alice", &[], Duration::from_secs(60));
    assert!(reason(auth.verify(Some(&bearer(&forged)))).contains("signature"));

    // `alg: none`, no signature.
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = engine.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = engine.encode(
        serde_json::to_vec(&claims(now + 60, "cap-services", "cap-services")).expect("json"),
    );
    let unsigned = format!("{header}.{body}.");
    assert!(auth.verify(Some(&bearer(&unsigned))).is_err());

    // Another algorithm (HS256 with the public key as the secret: the classic confusion).
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(now + 60, "cap-services", "cap-services"),
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
    )
    .expect("encode");
    assert!(reason(auth.verify(Some(&bearer(&hs)))).contains("accepts"));
}

#[test]
fn a_subject_over_its_write_rate_is_told_when_to_return() {
    let limit = WriteLimit::new(1, 2);
    assert!(limit.check("alice").is_ok());
    assert!(limit.check("alice").is_ok());
    let Err(AuthError::RateLimited { retry_after_secs }) = limit.check("alice") else {
        panic!("the third write in a burst of two is refused");
    };
    assert!(retry_after_secs >= 1);
    assert!(
        limit.check("bob").is_ok(),
        "each subject has its own budget"
    );
}

#[test]
fn refusals_are_problems_with_their_headers() {
    let response = AuthError::Unauthenticated {
        realm: "inventory".into(),
        reason: "the token has expired".into(),
    }
    .into_response();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .expect("ascii");
    assert!(challenge.starts_with("Bearer realm=\"inventory\", error=\"invalid_token\""));
    let limited = AuthError::RateLimited {
        retry_after_secs: 2,
    }
    .into_response();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()[header::RETRY_AFTER], "2");
}

#[test]
fn dev_keys_are_created_once() {
    let dir = temp_dir();
    let first = DevKeys::ensure(&dir).expect("create");
    let pem = std::fs::read(&first.signing_key).expect("read");
    DevKeys::ensure(&dir).expect("again");
    assert_eq!(std::fs::read(&first.signing_key).expect("read"), pem);
}

#[test]
fn a_providers_token_with_an_audience_list_and_no_iat_verifies() {
    let keys = DevKeys::ensure(&temp_dir()).expect("keys");
    let key = keys.verifying_key.to_string_lossy().into_owned();
    let config = Flags::parse_from(["svc", "--auth-verifying-key-file", &key]).auth;
    let auth = Authenticator::from_config(&config, "test").expect("authenticator");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "sub": "alice",
        "exp": now + 60,
        "iss": "cap-services",
        "aud": ["other-api", "cap-services"],
        "scope": "inventory:admin",
        "email": "alice@example.com",
    });
    let pem = std::fs::read(&keys.signing_key).expect("read");
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(&pem).expect("key"),
    )
    .expect("encode");
    let caller = auth.verify(Some(&bearer(&token))).expect("valid");
    assert_eq!(caller.subject, "alice");
    assert!(caller.has_scope("inventory:admin"));
}
