#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::keys::tests::{test_key, ALL, ASYMMETRIC};
use crate::keys::{Jwk, SigningKey};

const ISSUER: &str = "https://auth.test";
const AUDIENCE: &str = "api";
const LEEWAY: u64 = 30;
const NOW: i64 = 1_700_000_000;

fn now() -> Timestamp {
    Timestamp::from_secs(NOW)
}

fn claims() -> Claims {
    Claims {
        iss: ISSUER.into(),
        sub: Uuid::from_u128(1),
        aud: AUDIENCE.into(),
        iat: now(),
        nbf: now(),
        exp: Timestamp::from_secs(NOW + 900),
        jti: Uuid::from_u128(2),
        sid: Uuid::from_u128(3),
        email: "user@example.test".into(),
        role: Role::User,
    }
}

fn config() -> VerifierConfig {
    VerifierConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway: Duration::from_secs(LEEWAY),
    }
}

/// A verifier that knows every test key, so a refusal is never just "unknown key".
fn verifier() -> Verifier {
    Verifier::new(
        config(),
        ALL.iter()
            .map(|&alg| test_key(alg).verifying_key())
            .collect(),
    )
}

fn ed() -> &'static SigningKey {
    test_key(Algorithm::EdDSA)
}

fn header(alg: &str, kid: &str) -> Value {
    json!({ "alg": alg, "typ": "at+jwt", "kid": kid })
}

fn payload() -> Value {
    serde_json::to_value(claims()).unwrap()
}

/// A token with a valid signature over exactly these header and payload values.
fn forge(key: &SigningKey, header: &Value, payload: &Value) -> String {
    forge_raw(
        key,
        header.to_string().as_bytes(),
        payload.to_string().as_bytes(),
    )
}

fn forge_raw(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    key.sign_compact(header, payload).unwrap()
}

fn ed_header() -> Value {
    header("EdDSA", ed().kid())
}

/// Asserts the refusal and that its text is fit for a quoted RFC 6750 header value.
/// Forge a token signed by the Ed25519 key with the default payload and this exact header
/// text, which need not be valid JSON.
fn forge_header(header: &str) -> String {
    forge_raw(ed(), header.as_bytes(), payload().to_string().as_bytes())
}

/// Assert the default verifier refuses `token` now as malformed, whatever the reason;
/// `case` names the input in the failure message.
fn assert_malformed(token: &str, case: &dyn std::fmt::Display) {
    assert!(
        matches!(
            verifier().verify(token, now()),
            Err(VerifyError::Malformed(_))
        ),
        "{case}"
    );
}

fn assert_refused(token: &str, expected: VerifyError) {
    assert_refused_by(&verifier(), token, now(), expected);
}

fn assert_refused_by(verifier: &Verifier, token: &str, at: Timestamp, expected: VerifyError) {
    let error = verifier.verify(token, at).unwrap_err();
    assert_fit_for_header(&error);
    assert_eq!(error, expected);
}

fn assert_fit_for_header(error: &VerifyError) {
    let text = error.to_string();
    assert!(
        !text.contains('"') && !text.contains('\\') && !text.is_empty(),
        "{text}"
    );
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn parts(token: &str) -> Vec<&str> {
    token.split('.').collect()
}

#[test]
fn a_token_round_trips_with_each_algorithm() {
    let verifier = verifier();
    for alg in ALL {
        let token = test_key(alg).sign(&claims()).unwrap();
        assert_eq!(verifier.verify(&token, now()).unwrap(), claims(), "{alg}");
    }
}

#[test]
fn signed_header_is_exactly_alg_typ_kid() {
    for alg in ALL {
        let key = test_key(alg);
        let token = key.sign(&claims()).unwrap();
        let header = URL_SAFE_NO_PAD.decode(parts(&token)[0]).unwrap();
        assert_eq!(
            String::from_utf8(header).unwrap(),
            format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{}"}}"#, key.kid())
        );
    }
}

#[test]
fn a_key_rebuilt_from_its_jwk_verifies_the_same_token() {
    for alg in ASYMMETRIC {
        let key = test_key(alg);
        let jwk = key.verifying_key().to_jwk().unwrap();
        let verifier = Verifier::new(config(), vec![VerifyingKey::from_jwk(&jwk).unwrap()]);
        let token = key.sign(&claims()).unwrap();
        assert_eq!(verifier.verify(&token, now()).unwrap(), claims(), "{alg}");
    }
}

#[test]
fn a_key_reloaded_from_pkcs8_signs_tokens_the_old_public_key_accepts() {
    for alg in ASYMMETRIC {
        let key = test_key(alg);
        let der = key.to_pkcs8_der().unwrap();
        let reloaded = SigningKey::from_pkcs8_der(alg, key.kid().into(), &der).unwrap();
        let token = reloaded.sign(&claims()).unwrap();
        assert_eq!(verifier().verify(&token, now()).unwrap(), claims(), "{alg}");
    }
}

#[test]
fn jwks_holds_public_keys_only_and_omits_hs256() {
    let verifier = verifier();
    let jwks = serde_json::to_value(verifier.jwks()).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 5);
    for key in keys {
        for private in ["d", "k", "p", "q", "dp", "dq", "qi", "oth"] {
            assert!(key.get(private).is_none(), "{private} in {key}");
        }
        assert_ne!(key["kty"], "oct");
        assert_ne!(key["alg"], "HS256");
        assert_ne!(key["kid"], test_key(Algorithm::HS256).kid());
    }
}

#[test]
fn a_token_over_8_kib_is_refused_before_parsing() {
    let token = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_refused(&token, VerifyError::TooLarge);
    // At exactly the limit the size is fine and the shape is what fails.
    let token = "a".repeat(MAX_TOKEN_BYTES);
    assert_malformed(&token, &"");
}

#[test]
fn a_token_with_two_parts_is_malformed() {
    let token = ed().sign(&claims()).unwrap();
    let two = token.rsplit_once('.').unwrap().0;
    assert_malformed(two, &"");
}

#[test]
fn a_token_with_four_parts_is_malformed() {
    let token = format!("{}.AAAA", ed().sign(&claims()).unwrap());
    assert_malformed(&token, &"");
}

#[test]
fn a_token_with_an_empty_part_is_malformed() {
    let token = ed().sign(&claims()).unwrap();
    let p = parts(&token);
    for bad in [
        format!(".{}.{}", p[1], p[2]),
        format!("{}..{}", p[0], p[2]),
        format!("{}.{}.", p[0], p[1]),
        String::new(),
        "..".into(),
    ] {
        assert_malformed(&bad, &bad);
    }
}

#[test]
fn a_header_that_is_not_base64url_is_malformed() {
    let token = ed().sign(&claims()).unwrap();
    let p = parts(&token);
    for header in [
        format!("{}*", p[0]),
        format!("+{}", &p[0][1..]),
        format!("{} ", p[0]),
    ] {
        let bad = format!("{header}.{}.{}", p[1], p[2]);
        assert_refused(&bad, VerifyError::Malformed("header is not base64url"));
    }
}

#[test]
fn a_padded_base64_header_is_malformed() {
    use base64::engine::general_purpose::URL_SAFE;
    // 10 bytes: padded base64 of it ends in "==".
    let header = br#"{"a":"bc"}"#;
    let padded = URL_SAFE.encode(header);
    assert!(padded.ends_with("=="));
    let token = forge_raw(ed(), header, payload().to_string().as_bytes());
    let p = parts(&token);
    let bad = format!("{padded}.{}.{}", p[1], p[2]);
    assert_refused(&bad, VerifyError::Malformed("header is not base64url"));
}

#[test]
fn base64_with_nonzero_trailing_bits_is_malformed() {
    // "e30" is `{}`; "e31" decodes to the same bytes with a stray trailing bit.
    let token = ed().sign(&claims()).unwrap();
    let p = parts(&token);
    let bad = format!("e31.{}.{}", p[1], p[2]);
    assert_refused(&bad, VerifyError::Malformed("header is not base64url"));
}

#[test]
fn a_header_that_is_not_json_is_malformed() {
    let token = forge_header("not json");
    assert_refused(&token, VerifyError::Malformed("header is not JSON"));
}

#[test]
fn a_header_that_is_not_an_object_is_malformed() {
    for header in [r#"["EdDSA"]"#, r#""EdDSA""#, "42", "null"] {
        let token = forge_header(header);
        assert_malformed(&token, &header);
    }
}

#[test]
fn a_header_with_a_duplicate_alg_is_malformed() {
    let header = format!(
        r#"{{"alg":"EdDSA","alg":"EdDSA","typ":"at+jwt","kid":"{}"}}"#,
        ed().kid()
    );
    let token = forge_header(&header);
    assert_malformed(&token, &"");
    // The classic confusion: the second `alg` disagrees with the first.
    let header = format!(
        r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}","alg":"none"}}"#,
        ed().kid()
    );
    let token = forge_header(&header);
    assert_malformed(&token, &"");
}

#[test]
fn a_header_with_a_duplicate_kid_or_typ_is_malformed() {
    let kid = ed().kid();
    for header in [
        format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"EdDSA","typ":"at+jwt","typ":"at+jwt","kid":"{kid}"}}"#),
    ] {
        let token = forge_header(&header);
        assert_malformed(&token, &header);
    }
}

#[test]
fn a_payload_with_a_duplicate_claim_is_refused() {
    let body = payload().to_string();
    let duplicated = format!(
        r#"{},"jti":"{}"}}"#,
        body.strip_suffix('}').unwrap(),
        Uuid::from_u128(99)
    );
    let token = forge_raw(
        ed(),
        ed_header().to_string().as_bytes(),
        duplicated.as_bytes(),
    );
    assert_refused(
        &token,
        VerifyError::InvalidClaims("duplicate claim `jti`".into()),
    );
}

#[test]
fn alg_none_is_refused_in_any_case() {
    for none in ["none", "None", "NONE", "nOnE"] {
        let token = forge(ed(), &header(none, ed().kid()), &payload());
        assert_refused(&token, VerifyError::UnsupportedAlgorithm);
        // The classic unsigned form, with an empty signature part.
        let (unsigned, _) = token.rsplit_once('.').unwrap();
        let unsigned = format!("{unsigned}.");
        assert_malformed(&unsigned, &"");
    }
}

#[test]
fn an_unknown_algorithm_is_refused() {
    for alg in [
        "HS512", "RS384", "PS384", "ES512", "ES256K", "eddsa", "hs256", "ps256", "",
    ] {
        let token = forge(ed(), &header(alg, ed().kid()), &payload());
        assert_refused(&token, VerifyError::UnsupportedAlgorithm);
    }
}

#[test]
fn a_non_string_alg_or_a_missing_alg_is_malformed() {
    for header in [
        json!({ "alg": 1, "typ": "at+jwt", "kid": ed().kid() }),
        json!({ "alg": null, "typ": "at+jwt", "kid": ed().kid() }),
        json!({ "typ": "at+jwt", "kid": ed().kid() }),
    ] {
        let token = forge(ed(), &header, &payload());
        assert_malformed(&token, &header);
    }
}

#[test]
fn each_forbidden_header_parameter_is_refused_by_name() {
    let names = ["jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"];
    for name in names {
        for value in [
            json!("https://evil.test/keys"),
            json!(["exp"]),
            json!({}),
            Value::Null,
        ] {
            let mut header = ed_header();
            header[name] = value.clone();
            let token = forge(ed(), &header, &payload());
            assert_refused(&token, VerifyError::ForbiddenHeader(name));
            assert_eq!(
                VerifyError::ForbiddenHeader(name).to_string(),
                format!("header parameter `{name}` is not allowed")
            );
        }
    }
}

#[test]
fn an_unknown_kid_is_refused() {
    let stranger = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let token = stranger.sign(&claims()).unwrap();
    assert_refused(&token, VerifyError::UnknownKey);
}

#[test]
fn a_missing_or_null_kid_is_refused() {
    let token = forge(
        ed(),
        &json!({ "alg": "EdDSA", "typ": "at+jwt" }),
        &payload(),
    );
    assert_refused(&token, VerifyError::UnknownKey);
    let token = forge(
        ed(),
        &json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": null }),
        &payload(),
    );
    assert_refused(&token, VerifyError::UnknownKey);
}

#[test]
fn a_kid_that_looks_like_a_path_or_url_only_selects_among_known_keys() {
    for kid in [
        "../../etc/passwd",
        "/dev/null",
        "http://evil.test/key",
        "file:///etc/passwd",
        "' OR 1=1 --",
        "",
    ] {
        let token = forge(ed(), &header("EdDSA", kid), &payload());
        assert_refused(&token, VerifyError::UnknownKey);
    }
}

#[test]
fn an_hs256_token_keyed_with_the_eddsa_public_key_is_an_algorithm_mismatch() {
    let public = ed().verifying_key().to_jwk().unwrap();
    let public_bytes = URL_SAFE_NO_PAD.decode(public.x.unwrap()).unwrap();
    let confused = SigningKey::hs256(&public_bytes).unwrap();
    let token = forge(&confused, &header("HS256", ed().kid()), &payload());
    assert_refused(&token, VerifyError::AlgorithmMismatch);
    // Also with the JWK text itself as the secret.
    let jwk_text = serde_json::to_vec(&ed().verifying_key().to_jwk()).unwrap();
    let confused = SigningKey::hs256(&jwk_text).unwrap();
    let token = forge(&confused, &header("HS256", ed().kid()), &payload());
    assert_refused(&token, VerifyError::AlgorithmMismatch);
}

#[test]
fn a_token_claiming_another_asymmetric_algorithm_for_a_key_is_a_mismatch() {
    let token = forge(
        test_key(Algorithm::ES256),
        &header("ES256", test_key(Algorithm::RS256).kid()),
        &payload(),
    );
    assert_refused(&token, VerifyError::AlgorithmMismatch);
}

#[test]
fn a_wrong_or_missing_typ_is_refused() {
    for typ in [
        json!("JWT"),
        json!("jwt"),
        json!("at+jwt "),
        json!(1),
        Value::Null,
    ] {
        let mut header = ed_header();
        header["typ"] = typ.clone();
        let token = forge(ed(), &header, &payload());
        let result = verifier().verify(&token, now());
        assert!(
            matches!(
                result,
                Err(VerifyError::WrongType | VerifyError::Malformed(_))
            ),
            "{typ}"
        );
    }
    let mut header = ed_header();
    header["typ"] = json!("JWT");
    assert_refused(&forge(ed(), &header, &payload()), VerifyError::WrongType);
    let token = forge(
        ed(),
        &json!({ "alg": "EdDSA", "kid": ed().kid() }),
        &payload(),
    );
    assert_refused(&token, VerifyError::WrongType);
}

#[test]
fn typ_is_accepted_in_either_rfc_9068_form_and_any_case() {
    for typ in [
        "at+jwt",
        "AT+JWT",
        "application/at+jwt",
        "Application/AT+JWT",
    ] {
        let mut header = ed_header();
        header["typ"] = json!(typ);
        let token = forge(ed(), &header, &payload());
        assert_eq!(verifier().verify(&token, now()).unwrap(), claims(), "{typ}");
    }
}

#[test]
fn header_strings_with_json_escapes_are_read_correctly() {
    let header = format!(
        r#"{{"alg":"Ed\u0044SA","typ":"at+jwt","kid":"{}"}}"#,
        ed().kid()
    );
    let token = forge_header(&header);
    assert_eq!(verifier().verify(&token, now()).unwrap(), claims());
    let header = format!(
        r#"{{"alg":"EdDSA","typ":"application\/at+jwt","kid":"{}"}}"#,
        ed().kid()
    );
    let token = forge_header(&header);
    assert_eq!(verifier().verify(&token, now()).unwrap(), claims());
}

#[test]
fn unknown_header_parameters_and_claims_are_ignored() {
    let mut header = ed_header();
    header["cty"] = json!("JWT");
    let mut body = payload();
    body["scope"] = json!("read write");
    body["extra"] = json!({ "nested": [1, 2, 3] });
    let token = forge(ed(), &header, &body);
    assert_eq!(verifier().verify(&token, now()).unwrap(), claims());
}

#[test]
fn an_altered_signature_is_refused() {
    for alg in ALL {
        let token = test_key(alg).sign(&claims()).unwrap();
        let p = parts(&token);
        let mut signature = URL_SAFE_NO_PAD.decode(p[2]).unwrap();
        signature[0] ^= 0x01;
        let bad = format!("{}.{}.{}", p[0], p[1], b64(&signature));
        assert_refused(&bad, VerifyError::BadSignature);
        // A truncated signature, and one taken from another token.
        signature.pop();
        let bad = format!("{}.{}.{}", p[0], p[1], b64(&signature));
        assert_refused(&bad, VerifyError::BadSignature);
    }
}

#[test]
fn a_signature_longer_than_any_key_makes_is_refused() {
    let token = ed().sign(&claims()).unwrap();
    let p = parts(&token);
    let bad = format!("{}.{}.{}", p[0], p[1], b64(&[7u8; 2048]));
    assert_refused(&bad, VerifyError::BadSignature);
}

#[test]
fn a_signature_as_long_as_a_4096_bit_rsa_key_makes_is_decoded_whole() {
    let mut buffer = [0u8; SIGNATURE_BUFFER_BYTES];
    let signature = [0xA5u8; MAX_SIGNATURE_BYTES];
    let decoded = decode_signature(&b64(&signature), &mut buffer).unwrap();
    assert_eq!(decoded, signature);
    let too_long = b64(&[0xA5u8; MAX_SIGNATURE_BYTES + 3]);
    assert_eq!(
        decode_signature(&too_long, &mut buffer),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn an_ecdsa_signature_in_der_form_is_refused() {
    for alg in [Algorithm::ES256, Algorithm::ES384] {
        let key = test_key(alg);
        let token = key.sign(&claims()).unwrap();
        let p = parts(&token);
        let raw = URL_SAFE_NO_PAD.decode(p[2]).unwrap();
        let der = der_signature(&raw);
        // The same signature, as AWS-LC's DER check reads it: valid, just not JOSE.
        let point = ec_point(alg);
        let (algorithm, _) = aws_lc_algorithms(alg);
        let input = format!("{}.{}", p[0], p[1]);
        assert!(
            aws_lc_rs::signature::UnparsedPublicKey::new(algorithm, &point)
                .verify(input.as_bytes(), &der)
                .is_ok(),
            "{alg}"
        );
        let bad = format!("{}.{}.{}", p[0], p[1], b64(&der));
        assert_refused(&bad, VerifyError::BadSignature);
    }
}

/// The ASN.1 DER form of a fixed-size ECDSA signature `r || s`.
fn der_signature(raw: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let start = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let mut value = bytes[start..].to_vec();
        if value[0] & 0x80 != 0 {
            value.insert(0, 0);
        }
        let mut out = vec![0x02, value.len() as u8];
        out.extend(value);
        out
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [integer(r), integer(s)].concat();
    let mut out = vec![0x30];
    if body.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(body.len() as u8);
    out.extend(body);
    out
}

/// The uncompressed public point of the ES256 or ES384 test key.
fn ec_point(alg: Algorithm) -> Vec<u8> {
    let jwk = test_key(alg).verifying_key().to_jwk().unwrap();
    let mut point = vec![4u8];
    point.extend(URL_SAFE_NO_PAD.decode(jwk.x.unwrap()).unwrap());
    point.extend(URL_SAFE_NO_PAD.decode(jwk.y.unwrap()).unwrap());
    point
}

/// AWS-LC's DER and fixed-form verification algorithms for ES256 or ES384.
fn aws_lc_algorithms(
    alg: Algorithm,
) -> (
    &'static aws_lc_rs::signature::EcdsaVerificationAlgorithm,
    &'static aws_lc_rs::signature::EcdsaVerificationAlgorithm,
) {
    use aws_lc_rs::signature as sig;
    match alg {
        Algorithm::ES256 => (&sig::ECDSA_P256_SHA256_ASN1, &sig::ECDSA_P256_SHA256_FIXED),
        _ => (&sig::ECDSA_P384_SHA384_ASN1, &sig::ECDSA_P384_SHA384_FIXED),
    }
}

#[test]
fn an_altered_payload_is_refused() {
    for alg in ALL {
        let token = test_key(alg).sign(&claims()).unwrap();
        let p = parts(&token);
        let mut elevated = payload();
        elevated["role"] = json!("admin");
        let bad = format!("{}.{}.{}", p[0], b64(elevated.to_string().as_bytes()), p[2]);
        assert_refused(&bad, VerifyError::BadSignature);
    }
}

#[test]
fn a_signature_from_another_token_is_refused() {
    let a = ed().sign(&claims()).unwrap();
    let mut other = claims();
    other.jti = Uuid::from_u128(42);
    let b = ed().sign(&other).unwrap();
    let (pa, pb) = (parts(&a), parts(&b));
    assert_refused(
        &format!("{}.{}.{}", pa[0], pa[1], pb[2]),
        VerifyError::BadSignature,
    );
}

fn without(claim: &str) -> String {
    let mut body = payload();
    body.as_object_mut().unwrap().remove(claim);
    forge(ed(), &ed_header(), &body)
}

#[test]
fn a_token_without_jti_is_refused() {
    assert_refused(
        &without("jti"),
        VerifyError::InvalidClaims("missing claim `jti`".into()),
    );
}

#[test]
fn a_token_without_sid_is_refused() {
    assert_refused(
        &without("sid"),
        VerifyError::InvalidClaims("missing claim `sid`".into()),
    );
}

#[test]
fn a_token_without_exp_is_refused() {
    assert_refused(
        &without("exp"),
        VerifyError::InvalidClaims("missing claim `exp`".into()),
    );
}

#[test]
fn every_claim_is_required() {
    for claim in [
        "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "sid", "email", "role",
    ] {
        assert_refused(
            &without(claim),
            VerifyError::InvalidClaims(format!("missing claim `{claim}`")),
        );
    }
}

#[test]
fn a_claim_of_the_wrong_type_is_named_without_echoing_its_value() {
    let cases = [
        ("exp", json!("soon\" evil=\"x")),
        ("jti", json!("not-a-uuid\\\"")),
        ("role", json!("root\"")),
        ("iss", json!(7)),
        ("nbf", json!(1.5)),
    ];
    for (claim, value) in cases {
        let mut body = payload();
        body[claim] = value;
        let token = forge(ed(), &ed_header(), &body);
        assert_refused(
            &token,
            VerifyError::InvalidClaims(format!("claim `{claim}` is invalid")),
        );
    }
}

#[test]
fn a_payload_that_is_not_utf8_is_malformed() {
    let token = forge_raw(
        ed(),
        ed_header().to_string().as_bytes(),
        b"{\"iss\":\"\xff\xfe\"}",
    );
    assert_refused(&token, VerifyError::Malformed("payload is not UTF-8"));
}

#[test]
fn a_payload_that_is_not_a_json_object_is_malformed() {
    let header = ed_header().to_string();
    let trailing = format!("{}{{}}", payload());
    for body in [
        &b"[1,2]"[..],
        b"\"claims\"",
        b"not json",
        b"",
        trailing.as_bytes(),
    ] {
        let token = forge_raw(ed(), header.as_bytes(), body);
        if body.is_empty() {
            // An empty payload encodes to an empty part.
            assert_malformed(&token, &"");
            continue;
        }
        let result = verifier().verify(&token, now());
        assert!(
            matches!(result, Err(VerifyError::Malformed(_))),
            "{:?} gave {result:?}",
            String::from_utf8_lossy(body)
        );
    }
}

fn at(secs_after_exp: i64) -> Timestamp {
    Timestamp::from_secs(claims().exp.as_secs() + secs_after_exp)
}

#[test]
fn a_token_expired_within_the_leeway_is_accepted() {
    let token = ed().sign(&claims()).unwrap();
    assert!(verifier().verify(&token, at(0)).is_ok());
    assert!(verifier().verify(&token, at(LEEWAY as i64)).is_ok());
}

#[test]
fn a_token_expired_beyond_the_leeway_is_refused() {
    let token = ed().sign(&claims()).unwrap();
    assert_refused_by(
        &verifier(),
        &token,
        at(LEEWAY as i64 + 1),
        VerifyError::Expired,
    );
}

#[test]
fn a_token_whose_nbf_is_within_the_leeway_is_accepted() {
    let mut early = claims();
    early.nbf = Timestamp::from_secs(NOW + LEEWAY as i64);
    let token = ed().sign(&early).unwrap();
    assert_eq!(verifier().verify(&token, now()).unwrap(), early);
}

#[test]
fn a_token_whose_nbf_is_beyond_the_leeway_is_not_yet_valid() {
    let mut early = claims();
    early.nbf = Timestamp::from_secs(NOW + LEEWAY as i64 + 1);
    let token = ed().sign(&early).unwrap();
    assert_refused(&token, VerifyError::NotYetValid);
}

#[test]
fn extreme_timestamps_do_not_overflow() {
    let mut forever = claims();
    forever.exp = Timestamp::MAX;
    forever.nbf = Timestamp::MIN;
    let token = ed().sign(&forever).unwrap();
    assert!(verifier().verify(&token, Timestamp::MAX).is_ok());
    let mut never = claims();
    never.exp = Timestamp::MIN;
    let token = ed().sign(&never).unwrap();
    assert_refused(&token, VerifyError::Expired);
}

#[test]
fn a_token_from_another_issuer_is_refused() {
    let mut foreign = claims();
    foreign.iss = "https://other.test".into();
    assert_refused(&ed().sign(&foreign).unwrap(), VerifyError::WrongIssuer);
}

#[test]
fn a_token_for_another_audience_is_refused() {
    let mut foreign = claims();
    foreign.aud = "billing".into();
    assert_refused(&ed().sign(&foreign).unwrap(), VerifyError::WrongAudience);
}

#[test]
fn rotation_accepts_both_keys_while_both_are_present_and_refuses_a_removed_one() {
    let old = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let new = SigningKey::generate(Algorithm::ES256).unwrap();
    let verifier = Verifier::new(config(), vec![old.verifying_key()]);
    let old_token = old.sign(&claims()).unwrap();
    let new_token = new.sign(&claims()).unwrap();
    assert!(verifier.verify(&old_token, now()).is_ok());
    assert_refused_by(&verifier, &new_token, now(), VerifyError::UnknownKey);

    verifier.set_keys(vec![new.verifying_key(), old.verifying_key()]);
    assert!(verifier.verify(&old_token, now()).is_ok());
    assert!(verifier.verify(&new_token, now()).is_ok());
    assert_eq!(verifier.jwks().keys.len(), 2);

    verifier.set_keys(vec![new.verifying_key()]);
    assert_refused_by(&verifier, &old_token, now(), VerifyError::UnknownKey);
    assert!(verifier.verify(&new_token, now()).is_ok());
    let kids: Vec<String> = verifier.keys().iter().map(|k| k.kid().to_owned()).collect();
    assert_eq!(kids, [new.kid()]);
}

#[test]
fn a_verifier_with_no_keys_refuses_everything_as_unknown_key() {
    let verifier = Verifier::new(config(), Vec::new());
    assert_refused_by(
        &verifier,
        &ed().sign(&claims()).unwrap(),
        now(),
        VerifyError::UnknownKey,
    );
    assert_eq!(verifier.jwks(), Jwks::default());
    assert_eq!(verifier.config().issuer, ISSUER);
}

#[test]
fn every_error_description_is_short_fixed_text_fit_for_a_quoted_header() {
    let errors = [
        VerifyError::TooLarge,
        VerifyError::Malformed("expected three dot-separated parts"),
        VerifyError::ForbiddenHeader("x5t#S256"),
        VerifyError::UnsupportedAlgorithm,
        VerifyError::UnknownKey,
        VerifyError::AlgorithmMismatch,
        VerifyError::WrongType,
        VerifyError::BadSignature,
        VerifyError::InvalidClaims("missing claim `jti`".into()),
        VerifyError::Expired,
        VerifyError::NotYetValid,
        VerifyError::WrongIssuer,
        VerifyError::WrongAudience,
    ];
    for error in &errors {
        assert_fit_for_header(error);
        assert!(error.to_string().len() < 80, "{error}");
    }
    assert_eq!(VerifyError::Expired.to_string(), "token is expired");
    assert_eq!(VerifyError::UnknownKey.to_string(), "unknown signing key");
}

#[test]
fn debug_of_a_verifier_shows_no_secret() {
    let verifier = verifier();
    let text = format!("{verifier:?}");
    assert!(text.contains(test_key(Algorithm::HS256).kid()));
    assert!(!text.contains("shared secret"));
}

#[test]
#[ignore = "measurement; prints ns per verify, run with --release"]
fn verify_latency_per_algorithm() {
    let verifier = verifier();
    for (alg, token) in ALL.iter().zip(valid_tokens()) {
        let rounds = 2_000;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(verifier.verify(std::hint::black_box(token), now()).unwrap());
        }
        let ns = start.elapsed().as_nanos() / rounds;
        println!("{alg}: {ns} ns per verify");
    }
}

/// One valid token per algorithm, signed once.
fn valid_tokens() -> &'static [String; 6] {
    static TOKENS: OnceLock<[String; 6]> = OnceLock::new();
    TOKENS.get_or_init(|| ALL.map(|alg| test_key(alg).sign(&claims()).unwrap()))
}

fn shared_verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(verifier)
}

proptest! {
    #[test]
    fn random_bytes_never_panic_and_never_verify(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let text = String::from_utf8_lossy(&bytes);
        let error = shared_verifier().verify(&text, now()).unwrap_err();
        assert_fit_for_header(&error);
    }

    #[test]
    fn random_three_part_base64_never_verifies(
        header in proptest::collection::vec(any::<u8>(), 1..80),
        body in proptest::collection::vec(any::<u8>(), 1..200),
        signature in proptest::collection::vec(any::<u8>(), 1..300),
    ) {
        let token = format!("{}.{}.{}", b64(&header), b64(&body), b64(&signature));
        let error = shared_verifier().verify(&token, now()).unwrap_err();
        assert_fit_for_header(&error);
    }

    #[test]
    fn a_valid_token_with_one_character_replaced_never_verifies(
        which in 0usize..6,
        position in any::<proptest::sample::Index>(),
        replacement in proptest::char::range(' ', '~'),
    ) {
        let token = &valid_tokens()[which];
        let position = position.index(token.len());
        let original = token.as_bytes()[position] as char;
        prop_assume!(replacement != original);
        let mut altered = token.clone();
        altered.replace_range(position..=position, replacement.encode_utf8(&mut [0; 4]));
        let result = shared_verifier().verify(&altered, now());
        prop_assert!(result.is_err(), "{altered} verified");
        assert_fit_for_header(&result.unwrap_err());
    }

    #[test]
    fn a_valid_token_with_one_character_removed_never_verifies(
        which in 0usize..6,
        position in any::<proptest::sample::Index>(),
    ) {
        let token = &valid_tokens()[which];
        let mut altered = token.clone();
        altered.remove(position.index(token.len()));
        let result = shared_verifier().verify(&altered, now());
        prop_assert!(result.is_err(), "{altered} verified");
        assert_fit_for_header(&result.unwrap_err());
    }
}

#[test]
fn an_hs256_token_keyed_with_an_rsa_public_key_is_refused() {
    let rsa = test_key(Algorithm::RS256);
    let jwk = rsa.verifying_key().to_jwk().unwrap();
    let n = URL_SAFE_NO_PAD.decode(jwk.n.as_deref().unwrap()).unwrap();
    // What a confused verifier might use as the HMAC key: the modulus, the JWK text,
    // the SubjectPublicKeyInfo DER as a PEM would carry it.
    let spki = {
        use aws_lc_rs::encoding::AsDer as _;
        aws_lc_rs::signature::RsaPublicKeyComponents {
            n: &n[..],
            e: &[1u8, 0, 1][..],
        }
        .as_der()
        .unwrap()
        .as_ref()
        .to_vec()
    };
    for secret in [n.clone(), serde_json::to_vec(&jwk).unwrap(), spki] {
        let confused = SigningKey::hs256(&secret).unwrap();
        let token = forge(&confused, &header("HS256", rsa.kid()), &payload());
        assert_refused(&token, VerifyError::AlgorithmMismatch);
        // Also when the verifier holds the same RSA key for RS256 and PS256.
        let keys = VerifyingKey::from_provider_jwk(&jwk_without_alg(Algorithm::RS256), &ASYMMETRIC)
            .unwrap();
        let verifier = Verifier::new(config(), keys);
        assert_refused_by(&verifier, &token, now(), VerifyError::AlgorithmMismatch);
    }
}

fn jwk_without_alg(alg: Algorithm) -> Jwk {
    Jwk {
        alg: None,
        use_: None,
        ..test_key(alg).verifying_key().to_jwk().unwrap()
    }
}

#[test]
fn keys_are_looked_up_by_kid_and_alg() {
    // One RSA key under one kid, for RS256 and PS256: each token finds its own.
    let rsa = test_key(Algorithm::RS256);
    let keys =
        VerifyingKey::from_provider_jwk(&jwk_without_alg(Algorithm::RS256), &ASYMMETRIC).unwrap();
    assert_eq!(keys.len(), 2);
    let verifier = Verifier::new(config(), keys);
    let rs256 = rsa.sign(&claims()).unwrap();
    assert_eq!(verifier.verify(&rs256, now()).unwrap(), claims());
    let der = rsa.to_pkcs8_der().unwrap();
    let pss = SigningKey::from_pkcs8_der(Algorithm::PS256, rsa.kid().into(), &der).unwrap();
    let ps256 = pss.sign(&claims()).unwrap();
    assert_eq!(verifier.verify(&ps256, now()).unwrap(), claims());

    // A PKCS#1 v1.5 signature presented as PS256 finds the PSS key and fails there.
    let p = parts(&rs256);
    let relabelled = forge_raw(
        rsa,
        header("PS256", rsa.kid()).to_string().as_bytes(),
        b"{}",
    );
    let q = parts(&relabelled);
    assert_refused_by(
        &verifier,
        &format!("{}.{}.{}", q[0], p[1], p[2]),
        now(),
        VerifyError::BadSignature,
    );

    // The kid exists with RS256 only: a PS256 token is an algorithm mismatch, not an
    // unknown key; a kid that exists nowhere is an unknown key whatever the alg.
    let only_rs = Verifier::new(config(), vec![rsa.verifying_key()]);
    assert_refused_by(&only_rs, &ps256, now(), VerifyError::AlgorithmMismatch);
    for alg in ["RS256", "PS256", "HS256", "EdDSA"] {
        let token = forge(rsa, &header(alg, "no-such-kid"), &payload());
        assert_refused_by(&only_rs, &token, now(), VerifyError::UnknownKey);
    }
}

#[test]
fn the_first_key_wins_for_the_same_kid_and_alg() {
    let a = test_key(Algorithm::EdDSA);
    let other = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let impostor = SigningKey::from_pkcs8_der(
        Algorithm::EdDSA,
        a.kid().into(),
        &other.to_pkcs8_der().unwrap(),
    )
    .unwrap();
    let verifier = Verifier::new(config(), vec![a.verifying_key(), impostor.verifying_key()]);
    assert!(verifier.verify(&a.sign(&claims()).unwrap(), now()).is_ok());
    assert_refused_by(
        &verifier,
        &impostor.sign(&claims()).unwrap(),
        now(),
        VerifyError::BadSignature,
    );
}

#[test]
fn ps256_and_es384_tokens_round_trip_and_refuse_tampering() {
    for alg in [Algorithm::PS256, Algorithm::ES384] {
        let key = test_key(alg);
        let token = key.sign(&claims()).unwrap();
        assert_eq!(verifier().verify(&token, now()).unwrap(), claims());
        let verifier = Verifier::new(config(), vec![key.verifying_key()]);
        assert_eq!(verifier.verify(&token, now()).unwrap(), claims());
        let p = parts(&token);
        let mut signature = URL_SAFE_NO_PAD.decode(p[2]).unwrap();
        let last = signature.len() - 1;
        signature[last] ^= 0x80;
        let bad = format!("{}.{}.{}", p[0], p[1], b64(&signature));
        assert_refused_by(&verifier, &bad, now(), VerifyError::BadSignature);
    }
}

// The JWS layer on its own: what a verifier of other issuers' tokens reuses.

fn jws_keys() -> Vec<VerifyingKey> {
    ALL.iter()
        .map(|&alg| test_key(alg).verifying_key())
        .collect()
}

/// A provider-shaped token: `typ` `JWT` (or as given), claims that are not tokengate's.
fn provider_token(alg: Algorithm, typ: Option<&str>, body: &Value) -> String {
    let mut header = json!({ "alg": alg.as_str(), "kid": test_key(alg).kid() });
    if let Some(typ) = typ {
        header["typ"] = json!(typ);
    }
    forge(test_key(alg), &header, body)
}

fn provider_claims() -> Value {
    json!({
        "iss": "https://sso.example/realms/main",
        "sub": "f:1234:alice",
        "aud": ["my-app", "account"],
        "realm_access": { "roles": ["user"] },
        "exp": NOW + 300,
    })
}

#[test]
fn verify_jws_gives_the_alg_kid_payload_and_signature() {
    let keys = jws_keys();
    for alg in ALL {
        let token = provider_token(alg, Some("JWT"), &provider_claims());
        let mut buffers = JwsBuffers::new();
        let jws = verify_jws(&token, &keys, TypCheck::Unchecked, &mut buffers).unwrap();
        assert_eq!(jws.alg, alg);
        assert_eq!(jws.kid, test_key(alg).kid());
        assert_eq!(jws.payload, provider_claims().to_string().as_bytes());
        let signature = URL_SAFE_NO_PAD.decode(parts(&token)[2]).unwrap();
        assert_eq!(jws.signature.len(), signature.len(), "{alg}");
        if !matches!(alg, Algorithm::ES256 | Algorithm::ES384) {
            assert_eq!(jws.signature, signature, "{alg}");
        }
    }
}

#[test]
fn verify_jws_checks_typ_only_as_asked() {
    let keys = jws_keys();
    let check = |typ: Option<&str>, typ_check: TypCheck<'_>| {
        let token = provider_token(Algorithm::EdDSA, typ, &provider_claims());
        verify_jws(&token, &keys, typ_check, &mut JwsBuffers::new()).map(|jws| jws.alg)
    };
    for typ in [
        None,
        Some("JWT"),
        Some("at+jwt"),
        Some("logout+jwt"),
        Some(""),
    ] {
        assert_eq!(check(typ, TypCheck::Unchecked), Ok(Algorithm::EdDSA));
    }
    for typ in ["JWT", "jwt", "application/JWT", "APPLICATION/jwt"] {
        assert_eq!(
            check(Some(typ), TypCheck::Exactly("JWT")),
            Ok(Algorithm::EdDSA)
        );
    }
    assert_eq!(
        check(
            Some("logout+jwt"),
            TypCheck::Exactly("application/logout+jwt")
        ),
        Ok(Algorithm::EdDSA)
    );
    for typ in [
        None,
        Some("at+jwt"),
        Some("JWT "),
        Some("application/"),
        Some("é"),
    ] {
        assert_eq!(
            check(typ, TypCheck::Exactly("JWT")),
            Err(VerifyError::WrongType),
            "{typ:?}"
        );
    }
    // A logout token or SET: `typ` may be left out, but if given it must be the right one.
    let logout = TypCheck::IfPresent(&["logout+jwt", "JWT"]);
    for typ in [
        None,
        Some("logout+jwt"),
        Some("application/Logout+JWT"),
        Some("jwt"),
    ] {
        assert_eq!(check(typ, logout), Ok(Algorithm::EdDSA), "{typ:?}");
    }
    for typ in ["at+jwt", "secevent+jwt", "logout", ""] {
        assert_eq!(
            check(Some(typ), logout),
            Err(VerifyError::WrongType),
            "{typ:?}"
        );
    }
    assert_eq!(
        check(Some("JWT"), TypCheck::AccessToken),
        Err(VerifyError::WrongType)
    );
    assert_eq!(
        check(None, TypCheck::AccessToken),
        Err(VerifyError::WrongType)
    );
    assert_eq!(
        check(Some("application/at+jwt"), TypCheck::AccessToken),
        Ok(Algorithm::EdDSA)
    );
}

#[test]
fn verify_jws_refuses_what_verify_refuses_whatever_the_typ_check() {
    let keys = jws_keys();
    let run = |token: &str| {
        verify_jws(token, &keys, TypCheck::Unchecked, &mut JwsBuffers::new()).map(|jws| jws.alg)
    };
    assert_eq!(
        run(&"a".repeat(MAX_TOKEN_BYTES + 1)),
        Err(VerifyError::TooLarge)
    );
    for name in ["jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"] {
        let mut header = json!({ "alg": "EdDSA", "kid": ed().kid() });
        header[name] = json!("x");
        assert_eq!(
            run(&forge(ed(), &header, &provider_claims())),
            Err(VerifyError::ForbiddenHeader(name))
        );
    }
    let none = forge(
        ed(),
        &json!({ "alg": "none", "kid": ed().kid() }),
        &provider_claims(),
    );
    assert_eq!(run(&none), Err(VerifyError::UnsupportedAlgorithm));
    let no_kid = forge(ed(), &json!({ "alg": "EdDSA" }), &provider_claims());
    assert_eq!(run(&no_kid), Err(VerifyError::UnknownKey));
    let confused = forge(
        test_key(Algorithm::HS256),
        &json!({ "alg": "HS256", "kid": ed().kid() }),
        &provider_claims(),
    );
    assert_eq!(run(&confused), Err(VerifyError::AlgorithmMismatch));
    let token = provider_token(Algorithm::ES384, None, &provider_claims());
    let p = parts(&token);
    let other = provider_token(Algorithm::ES384, None, &json!({ "sub": "mallory" }));
    assert_eq!(
        run(&format!("{}.{}.{}", p[0], parts(&other)[1], p[2])),
        Err(VerifyError::BadSignature)
    );
    // The payload is decoded only after the signature verified.
    let garbage = forge_raw(
        ed(),
        json!({ "alg": "EdDSA", "kid": ed().kid() })
            .to_string()
            .as_bytes(),
        b"x",
    );
    let g = parts(&garbage);
    assert_eq!(
        run(&format!("{}.{}*.{}", g[0], g[1], g[2])),
        Err(VerifyError::BadSignature)
    );
    // With no keys at all, every kid is unknown.
    let mut buffers = JwsBuffers::new();
    assert_eq!(
        verify_jws(&token, &[], TypCheck::Unchecked, &mut buffers).map(|jws| jws.alg),
        Err(VerifyError::UnknownKey)
    );
}

#[test]
fn verify_jws_reads_a_payload_larger_than_the_stack_buffer() {
    let keys = jws_keys();
    let mut body = provider_claims();
    body["groups"] = json!(vec!["a-rather-long-group-name"; 200]);
    let token = provider_token(Algorithm::RS256, Some("JWT"), &body);
    assert!(token.len() < MAX_TOKEN_BYTES);
    let mut buffers = JwsBuffers::default();
    let jws = verify_jws(&token, &keys, TypCheck::Unchecked, &mut buffers).unwrap();
    assert!(jws.payload.len() > STACK_PART_BYTES);
    assert_eq!(jws.payload, body.to_string().as_bytes());
}

/// `n - s` of a fixed-size ECDSA signature: the other valid form of the same signature.
fn negate_s(alg: Algorithm, signature: &[u8]) -> Vec<u8> {
    let order: &[u8] = match alg {
        Algorithm::ES256 => &P256_ORDER,
        _ => &P384_ORDER,
    };
    let (r, s) = signature.split_at(order.len());
    let mut out = vec![0u8; order.len()];
    let mut borrow = 0i32;
    for i in (0..order.len()).rev() {
        let mut digit = i32::from(order[i]) - i32::from(s[i]) - borrow;
        borrow = 0;
        if digit < 0 {
            digit += 256;
            borrow = 1;
        }
        out[i] = digit as u8;
    }
    assert_eq!(borrow, 0);
    [r, &out[..]].concat()
}

#[test]
fn both_forms_of_one_ecdsa_signature_give_the_same_signature_bytes() {
    let keys = jws_keys();
    for alg in [Algorithm::ES256, Algorithm::ES384] {
        // Enough signatures that both a high and a low `s` come up.
        let mut canonical_seen = 0;
        for _ in 0..24 {
            let token = provider_token(alg, None, &provider_claims());
            let p = parts(&token);
            let signature = URL_SAFE_NO_PAD.decode(p[2]).unwrap();
            let twin = format!("{}.{}.{}", p[0], p[1], b64(&negate_s(alg, &signature)));
            let mut a = JwsBuffers::new();
            let mut b = JwsBuffers::new();
            let first = verify_jws(&token, &keys, TypCheck::Unchecked, &mut a).unwrap();
            // The twin verifies too (this also checks the curve order constant) ...
            let second = verify_jws(&twin, &keys, TypCheck::Unchecked, &mut b).unwrap();
            // ... and names the same signature.
            assert_eq!(first.signature, second.signature, "{alg}");
            let half = signature.len() / 2;
            assert_eq!(first.signature[..half], signature[..half]);
            if first.signature == signature.as_slice() {
                canonical_seen += 1;
            }
        }
        assert!(
            canonical_seen > 0 && canonical_seen < 24,
            "{alg}: {canonical_seen}"
        );
    }
}

#[test]
fn a_cached_token_is_still_refused_once_expired_or_once_its_key_is_gone() {
    let verifier = verifier();
    let token = ed().sign(&claims()).unwrap();
    assert_eq!(verifier.verify(&token, now()), Ok(claims()));
    assert_eq!(verifier.cache().len(), 1);
    assert_eq!(verifier.verify(&token, now()), Ok(claims()), "a hit");

    let expired = claims().exp.plus(Duration::from_secs(LEEWAY + 1));
    assert_eq!(verifier.verify(&token, expired), Err(VerifyError::Expired));

    verifier.set_keys(Vec::new());
    assert!(
        verifier.cache().is_empty(),
        "new keys forget every cached token"
    );
    assert_eq!(verifier.verify(&token, now()), Err(VerifyError::UnknownKey));
}

#[test]
fn refused_tokens_are_never_cached() {
    let verifier = verifier();
    let mut token = ed().sign(&claims()).unwrap();
    token.pop();
    assert!(verifier.verify(&token, now()).is_err());
    assert!(verifier.verify(&token, now()).is_err());
    assert!(verifier.cache().is_empty());
}
