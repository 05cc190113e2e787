#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use super::*;

/// One key per algorithm, made once: RSA generation is slow.
pub(crate) fn test_key(alg: Algorithm) -> &'static SigningKey {
    static KEYS: OnceLock<[SigningKey; 4]> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        [
            SigningKey::generate(Algorithm::EdDSA).unwrap(),
            SigningKey::generate(Algorithm::ES256).unwrap(),
            SigningKey::generate(Algorithm::RS256).unwrap(),
            SigningKey::hs256(b"a shared secret of at least 32 bytes, for tests").unwrap(),
        ]
    });
    &keys[alg_index(alg)]
}

pub(crate) const ALL: [Algorithm; 4] = [
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::RS256,
    Algorithm::HS256,
];

fn alg_index(alg: Algorithm) -> usize {
    match alg {
        Algorithm::EdDSA => 0,
        Algorithm::ES256 => 1,
        Algorithm::RS256 => 2,
        Algorithm::HS256 => 3,
    }
}

fn signature_of(token: &str) -> Vec<u8> {
    let signature = token.rsplit('.').next().unwrap();
    URL_SAFE_NO_PAD.decode(signature).unwrap()
}

#[test]
fn algorithm_names_are_the_jose_names_in_display_fromstr_and_serde() {
    for alg in ALL {
        let name = alg.as_str();
        assert_eq!(alg.to_string(), name);
        assert_eq!(name.parse::<Algorithm>().unwrap(), alg);
        assert_eq!(serde_json::to_string(&alg).unwrap(), format!("\"{name}\""));
        let parsed: Algorithm = serde_json::from_str(&format!("\"{name}\"")).unwrap();
        assert_eq!(parsed, alg);
    }
    assert_eq!(
        ALL.map(Algorithm::as_str),
        ["EdDSA", "ES256", "RS256", "HS256"]
    );
}

#[test]
fn algorithm_names_are_case_sensitive_and_none_is_unknown() {
    for name in ["eddsa", "hs256", "none", "None", "HS512", ""] {
        assert!(
            matches!(
                name.parse::<Algorithm>(),
                Err(KeyError::UnknownAlgorithm(_))
            ),
            "{name} parsed"
        );
    }
}

#[test]
fn hs256_refuses_a_secret_shorter_than_32_bytes() {
    assert!(matches!(
        SigningKey::hs256(&[7u8; 31]),
        Err(KeyError::WeakSecret)
    ));
    assert!(SigningKey::hs256(&[7u8; 32]).is_ok());
}

#[test]
fn hs256_kid_is_the_same_for_the_same_secret_and_differs_otherwise() {
    let a = SigningKey::hs256(&[1u8; 32]).unwrap();
    let b = SigningKey::hs256(&[1u8; 32]).unwrap();
    let c = SigningKey::hs256(&[2u8; 32]).unwrap();
    assert_eq!(a.kid(), b.kid());
    assert_ne!(a.kid(), c.kid());
    assert!(a.kid().starts_with("hs-"));
    assert_eq!(a.kid().len(), 15);
    // Nodes sharing the secret verify each other's tokens.
    let claims_token = a.sign_compact(b"{}", b"{}").unwrap();
    let (input, _) = claims_token.rsplit_once('.').unwrap();
    assert!(b
        .verifying_key()
        .verify_signature(input.as_bytes(), &signature_of(&claims_token)));
}

#[test]
fn generate_refuses_hs256_because_secrets_come_from_configuration() {
    assert!(matches!(
        SigningKey::generate(Algorithm::HS256),
        Err(KeyError::Unsupported(_))
    ));
}

#[test]
fn generated_keys_have_random_base64url_kids() {
    let a = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let b = SigningKey::generate(Algorithm::EdDSA).unwrap();
    assert_ne!(a.kid(), b.kid());
    assert_eq!(URL_SAFE_NO_PAD.decode(a.kid()).unwrap().len(), 16);
}

#[test]
fn each_key_reports_its_algorithm_and_kid_on_both_halves() {
    for alg in ALL {
        let key = test_key(alg);
        assert_eq!(key.alg(), alg);
        assert_eq!(key.verifying_key().alg(), alg);
        assert_eq!(key.verifying_key().kid(), key.kid());
    }
}

#[test]
fn pkcs8_der_round_trip_keeps_the_same_key() {
    for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
        let key = test_key(alg);
        let der = key.to_pkcs8_der().unwrap();
        let loaded = SigningKey::from_pkcs8_der(alg, key.kid().to_owned(), &der).unwrap();
        assert_eq!(loaded.kid(), key.kid());
        assert_eq!(loaded.alg(), alg);
        assert_eq!(loaded.to_pkcs8_der().unwrap(), der);
        assert_eq!(
            loaded.verifying_key().to_jwk(),
            key.verifying_key().to_jwk()
        );
        // A token signed by the reloaded key verifies under the original public key.
        let token = loaded.sign_compact(b"{}", b"{}").unwrap();
        let (input, _) = token.rsplit_once('.').unwrap();
        assert!(key
            .verifying_key()
            .verify_signature(input.as_bytes(), &signature_of(&token)));
    }
}

#[test]
fn pkcs8_der_is_refused_for_the_wrong_algorithm_garbage_or_an_empty_kid() {
    let ed_der = test_key(Algorithm::EdDSA).to_pkcs8_der().unwrap();
    for alg in [Algorithm::ES256, Algorithm::RS256] {
        assert!(matches!(
            SigningKey::from_pkcs8_der(alg, "k".into(), &ed_der),
            Err(KeyError::InvalidKey(_))
        ));
    }
    assert!(matches!(
        SigningKey::from_pkcs8_der(Algorithm::EdDSA, "k".into(), b"not der"),
        Err(KeyError::InvalidKey(_))
    ));
    assert!(matches!(
        SigningKey::from_pkcs8_der(Algorithm::EdDSA, String::new(), &ed_der),
        Err(KeyError::InvalidKey(_))
    ));
}

#[test]
fn pkcs8_der_is_refused_for_rsa_keys_under_2048_bits() {
    use rsa::pkcs8::EncodePrivateKey;
    let small = rsa::RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
    let der = small.to_pkcs8_der().unwrap();
    assert!(matches!(
        SigningKey::from_pkcs8_der(Algorithm::RS256, "k".into(), der.as_bytes()),
        Err(KeyError::InvalidKey(_))
    ));
}

#[test]
fn hs256_secrets_have_no_pkcs8_form() {
    assert!(matches!(
        test_key(Algorithm::HS256).to_pkcs8_der(),
        Err(KeyError::Unsupported(_))
    ));
    assert!(matches!(
        SigningKey::from_pkcs8_der(Algorithm::HS256, "k".into(), &[0u8; 48]),
        Err(KeyError::Unsupported(_))
    ));
}

#[test]
fn debug_output_never_contains_key_material() {
    let secret = *b"0123456789abcdefghijklmnopqrstuvwxyz";
    let hs = SigningKey::hs256(&secret).unwrap();
    let printed = [
        format!("{hs:?}"),
        format!("{:?}", hs.verifying_key()),
        format!("{:#?}", hs.verifying_key()),
    ];
    for text in &printed {
        assert!(!text.contains("0123456789"), "{text}");
        assert!(!text.contains("48, 49, 50"), "{text}");
    }
    for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
        let key = test_key(alg);
        assert_eq!(
            format!("{key:?}"),
            format!("SigningKey {{ alg: {alg}, kid: {:?}, .. }}", key.kid())
        );
    }
}

#[test]
fn es256_signatures_are_64_byte_jose_r_s_not_der() {
    let token = test_key(Algorithm::ES256)
        .sign_compact(b"{}", b"{}")
        .unwrap();
    let signature = signature_of(&token);
    assert_eq!(signature.len(), 64);
    // DER would start with a SEQUENCE tag and be 70 to 72 bytes.
    assert!(p256::ecdsa::Signature::from_der(&signature).is_err());
}

#[test]
fn generated_rsa_keys_are_2048_bits() {
    let jwk = test_key(Algorithm::RS256).verifying_key().to_jwk().unwrap();
    let n = URL_SAFE_NO_PAD.decode(jwk.n.unwrap()).unwrap();
    assert_eq!(n.len(), 256);
    assert_eq!(
        signature_of(
            &test_key(Algorithm::RS256)
                .sign_compact(b"{}", b"{}")
                .unwrap()
        )
        .len(),
        256
    );
}

#[test]
fn hs256_verifying_key_has_no_jwk() {
    assert_eq!(test_key(Algorithm::HS256).verifying_key().to_jwk(), None);
}

#[test]
fn jwk_round_trip_keeps_the_key_and_its_public_members_only() {
    let expected = [
        (Algorithm::EdDSA, "OKP", Some("Ed25519")),
        (Algorithm::ES256, "EC", Some("P-256")),
        (Algorithm::RS256, "RSA", None),
    ];
    for (alg, kty, crv) in expected {
        let public = test_key(alg).verifying_key();
        let jwk = public.to_jwk().unwrap();
        assert_eq!(jwk.kty, kty);
        assert_eq!(jwk.crv.as_deref(), crv);
        assert_eq!(jwk.alg, alg.as_str());
        assert_eq!(jwk.use_, "sig");
        let json = serde_json::to_value(&jwk).unwrap();
        assert_eq!(json["use"], "sig");
        let object = json.as_object().unwrap();
        assert!(object.values().all(|v| !v.is_null()), "{json}");
        let back = VerifyingKey::from_jwk(&serde_json::from_value(json).unwrap()).unwrap();
        assert_eq!(back.kid(), public.kid());
        assert_eq!(back.alg(), alg);
        assert_eq!(back.to_jwk().unwrap(), jwk);
    }
}

#[test]
fn a_private_jwk_deserializes_to_its_public_part_only() {
    let mut json =
        serde_json::to_value(test_key(Algorithm::EdDSA).verifying_key().to_jwk().unwrap()).unwrap();
    json["d"] = "c2VjcmV0".into();
    let jwk: Jwk = serde_json::from_value(json).unwrap();
    let out = serde_json::to_value(&jwk).unwrap();
    assert!(out.get("d").is_none());
}

fn ed_jwk() -> Jwk {
    test_key(Algorithm::EdDSA).verifying_key().to_jwk().unwrap()
}

fn assert_invalid(jwk: &Jwk) {
    assert!(
        matches!(VerifyingKey::from_jwk(jwk), Err(KeyError::InvalidKey(_))),
        "accepted {jwk:?}"
    );
}

#[test]
fn from_jwk_refuses_symmetric_oct_keys() {
    assert_invalid(&Jwk {
        kty: "oct".into(),
        alg: "HS256".into(),
        crv: None,
        x: None,
        ..ed_jwk()
    });
}

#[test]
fn from_jwk_refuses_an_alg_that_does_not_match_the_key_type() {
    assert_invalid(&Jwk {
        alg: "ES256".into(),
        ..ed_jwk()
    });
    assert_invalid(&Jwk {
        alg: "HS256".into(),
        ..ed_jwk()
    });
    assert_invalid(&Jwk {
        alg: "none".into(),
        ..ed_jwk()
    });
    assert_invalid(&Jwk {
        crv: Some("X25519".into()),
        ..ed_jwk()
    });
}

#[test]
fn from_jwk_refuses_keys_not_for_signing() {
    assert_invalid(&Jwk {
        use_: "enc".into(),
        ..ed_jwk()
    });
}

#[test]
fn from_jwk_refuses_bad_or_foreign_members() {
    assert_invalid(&Jwk {
        x: Some("AAAA".into()),
        ..ed_jwk()
    });
    assert_invalid(&Jwk {
        x: None,
        ..ed_jwk()
    });
    assert_invalid(&Jwk {
        n: Some("AQAB".into()),
        ..ed_jwk()
    });
    assert_invalid(&Jwk {
        kid: String::new(),
        ..ed_jwk()
    });
    let mut ec = test_key(Algorithm::ES256).verifying_key().to_jwk().unwrap();
    // Moving y off the curve.
    let mut y = URL_SAFE_NO_PAD.decode(ec.y.as_deref().unwrap()).unwrap();
    y[31] ^= 1;
    ec.y = Some(URL_SAFE_NO_PAD.encode(y));
    assert_invalid(&ec);
}

#[test]
fn from_jwk_refuses_a_small_order_ed25519_key() {
    // The identity point: it would "verify" forged signatures.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert_invalid(&Jwk {
        x: Some(URL_SAFE_NO_PAD.encode(identity)),
        ..ed_jwk()
    });
}

#[test]
fn from_jwk_refuses_rsa_keys_under_2048_bits() {
    let small = rsa::RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
    let mut jwk = test_key(Algorithm::RS256).verifying_key().to_jwk().unwrap();
    jwk.n = Some(URL_SAFE_NO_PAD.encode(small.n().to_bytes_be()));
    assert_invalid(&jwk);
}
