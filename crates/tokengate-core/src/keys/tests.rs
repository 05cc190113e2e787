#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use super::*;

/// One key per algorithm, made once: RSA generation is slow.
pub(crate) fn test_key(alg: Algorithm) -> &'static SigningKey {
    static KEYS: OnceLock<[SigningKey; 6]> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        ALL.map(|alg| match alg {
            Algorithm::HS256 => {
                SigningKey::hs256(b"a shared secret of at least 32 bytes, for tests").unwrap()
            }
            other => SigningKey::generate(other).unwrap(),
        })
    });
    &keys[alg_index(alg)]
}

pub(crate) const ALL: [Algorithm; 6] = [
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::HS256,
];

/// Every algorithm with a public key, so a PKCS#8 and a JWK form.
pub(crate) const ASYMMETRIC: [Algorithm; 5] = [
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::PS256,
];

fn alg_index(alg: Algorithm) -> usize {
    ALL.iter().position(|&a| a == alg).unwrap()
}

/// A 1024-bit RSA private key in PKCS#8 (made with `openssl genpkey`): too small to accept.
const RSA_1024_PKCS8: &str = "MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBAN0SgVgqwcRlPWQEjFnlJjpRmyG/MSR2bA/2gQ+4GWKblAI34e9mLlmpG0m9QEySkOR7M7WbRXiiwrxlTQVq2iFLeZZx57F8je3974LbtbPFMrnXh/p8yr3tcvNqQoTyiioTy/V4qJRJBXu+zFXq6l2amN5cH2z7S7xli7cuPR+TAgMBAAECgYEAkyM06VyT2MZVJNOOImrMlbYo3T4mVBFpfPphDfhHFQVdbliJTNAie1R9MAgA2rYWL6v8T5wHkfIqUD/QEpH6mT+ZC1h+vyTngyxeM9NOlUCs4BvIyS30rCVCvBA4hKGwUxpsj2b3jVCmhR3RSFleQuBBA1Oj/fGCAOY4vTJTW4kCQQD0rL7qK+LS1D/ncWZdRC0qqd00KPMEDE/CQaYQOkhrK2djI+837BT0b47RDWP5MfwrmFQDnkYKp8gvD3DQqG8FAkEA504VYuYzgZhX+QKq3fcGUseJyBabHSEufAzvmDp7WXCJ97bePyVl9SCWgXLev670G9JHDEOoveW5uJXzBPwntwJAWdNBk77g2v3JKDLdncf1vP/3kbqm3QmYDn0DdlmvVIjuv9rla+ZkGwkJqX39AfNz3J1j2qA0npzSRVSp2jC78QJAb2Mi2WWSGC6M7tViA1IaMXL13u1D9VstT3/LQbun+wI+7pOZoz8XQlxXHi97JUPTOjKhFD7g29HtBf7v8M6dMQJAfTBkExeNH9lkoymZS29EjCdTwCMwYz8HXN6wIcHDMVg0Wqtk1WPdPmnjJGxilmpGVOAOs3d4REPBbaoh3SDs7w==";

/// A P-256 private key in PKCS#8 as OpenSSL writes it (the same layout the `p256` crate
/// wrote for keys stored before the move to AWS-LC).
const P256_OPENSSL_PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgY9q+4uB16JC1QSPA4GjdeOqZak7OFzqnzwYWzT5PLsmhRANCAAQG4Qm+pFRfWbM+rCA+DKj7UPRxn2vhMsYjtDliL+JVTMgbYrZBFb/+4rst2OBevR/9zhuXNAOqUu/J3BVHbn8K";

fn standard_b64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// Whether `key` verifies a compact JWS it signed over `header.payload`.
fn self_verifies(signer: &SigningKey, verifier: &VerifyingKey) -> bool {
    let token = signer.sign_compact(b"{}", b"{}").unwrap();
    let (input, _) = token.rsplit_once('.').unwrap();
    verifier.verify_signature(input.as_bytes(), &signature_of(&token))
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
        ["EdDSA", "ES256", "ES384", "RS256", "PS256", "HS256"]
    );
}

#[test]
fn algorithm_names_are_case_sensitive_and_none_is_unknown() {
    for name in [
        "eddsa", "hs256", "ps256", "es384", "none", "None", "HS512", "PS384", "",
    ] {
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
    for alg in ASYMMETRIC {
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
    for alg in [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::RS256,
        Algorithm::PS256,
    ] {
        assert!(matches!(
            SigningKey::from_pkcs8_der(alg, "k".into(), &ed_der),
            Err(KeyError::InvalidKey(_))
        ));
    }
    // The curves are told apart.
    let p256 = test_key(Algorithm::ES256).to_pkcs8_der().unwrap();
    let p384 = test_key(Algorithm::ES384).to_pkcs8_der().unwrap();
    for (alg, der) in [(Algorithm::ES384, &p256), (Algorithm::ES256, &p384)] {
        assert!(matches!(
            SigningKey::from_pkcs8_der(alg, "k".into(), der),
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
    let der = standard_b64(RSA_1024_PKCS8);
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        assert!(matches!(
            SigningKey::from_pkcs8_der(alg, "k".into(), &der),
            Err(KeyError::InvalidKey(_))
        ));
    }
}

#[test]
fn an_rsa_pkcs8_key_serves_rs256_and_ps256_alike() {
    // The PKCS#8 form does not carry the padding: the stored `alg` decides.
    let der = test_key(Algorithm::RS256).to_pkcs8_der().unwrap();
    let pss = SigningKey::from_pkcs8_der(Algorithm::PS256, "k".into(), &der).unwrap();
    assert_eq!(pss.alg(), Algorithm::PS256);
    assert!(self_verifies(&pss, &pss.verifying_key()));
    // A PSS signature does not verify as PKCS#1 v1.5 under the same modulus, nor the reverse.
    let rs = test_key(Algorithm::RS256);
    assert!(!self_verifies(&pss, &rs.verifying_key()));
    assert!(!self_verifies(rs, &pss.verifying_key()));
}

#[test]
fn a_p256_pkcs8_key_written_by_openssl_loads_and_signs() {
    let der = standard_b64(P256_OPENSSL_PKCS8);
    let key = SigningKey::from_pkcs8_der(Algorithm::ES256, "k".into(), &der).unwrap();
    assert!(self_verifies(&key, &key.verifying_key()));
    let jwk = key.verifying_key().to_jwk().unwrap();
    assert_eq!(jwk.crv.as_deref(), Some("P-256"));
    assert!(matches!(
        SigningKey::from_pkcs8_der(Algorithm::ES384, "k".into(), &der),
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
    for alg in ASYMMETRIC {
        let key = test_key(alg);
        assert_eq!(
            format!("{key:?}"),
            format!("SigningKey {{ alg: {alg}, kid: {:?}, .. }}", key.kid())
        );
    }
}

#[test]
fn ecdsa_signatures_are_fixed_size_jose_r_s_not_der() {
    use aws_lc_rs::signature::{
        UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_ASN1,
        ECDSA_P384_SHA384_FIXED,
    };
    let cases = [
        (
            Algorithm::ES256,
            64,
            &ECDSA_P256_SHA256_FIXED,
            &ECDSA_P256_SHA256_ASN1,
        ),
        (
            Algorithm::ES384,
            96,
            &ECDSA_P384_SHA384_FIXED,
            &ECDSA_P384_SHA384_ASN1,
        ),
    ];
    for (alg, size, fixed, der) in cases {
        let key = test_key(alg);
        let token = key.sign_compact(b"{}", b"{}").unwrap();
        let (input, _) = token.rsplit_once('.').unwrap();
        let signature = signature_of(&token);
        assert_eq!(signature.len(), size, "{alg}");
        let jwk = key.verifying_key().to_jwk().unwrap();
        let mut point = vec![4u8];
        point.extend(URL_SAFE_NO_PAD.decode(jwk.x.unwrap()).unwrap());
        point.extend(URL_SAFE_NO_PAD.decode(jwk.y.unwrap()).unwrap());
        // AWS-LC's own fixed-form check accepts it, its DER check does not.
        assert!(UnparsedPublicKey::new(fixed, &point)
            .verify(input.as_bytes(), &signature)
            .is_ok());
        assert!(UnparsedPublicKey::new(der, &point)
            .verify(input.as_bytes(), &signature)
            .is_err());
    }
}

#[test]
fn generated_rsa_keys_are_2048_bits() {
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        let jwk = test_key(alg).verifying_key().to_jwk().unwrap();
        let n = URL_SAFE_NO_PAD.decode(jwk.n.unwrap()).unwrap();
        assert_eq!(n.len(), 256);
        assert_eq!(jwk.e.as_deref(), Some("AQAB"));
        let token = test_key(alg).sign_compact(b"{}", b"{}").unwrap();
        assert_eq!(signature_of(&token).len(), 256);
    }
}

#[test]
fn ps256_signatures_are_randomized_and_each_verifies() {
    let key = test_key(Algorithm::PS256);
    let a = key.sign_compact(b"{}", b"{}").unwrap();
    let b = key.sign_compact(b"{}", b"{}").unwrap();
    // A fresh 32-byte salt per signature (RFC 7518 §3.5).
    assert_ne!(signature_of(&a), signature_of(&b));
    assert!(self_verifies(key, &key.verifying_key()));
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
        (Algorithm::ES384, "EC", Some("P-384")),
        (Algorithm::RS256, "RSA", None),
        (Algorithm::PS256, "RSA", None),
    ];
    for (alg, kty, crv) in expected {
        let public = test_key(alg).verifying_key();
        let jwk = public.to_jwk().unwrap();
        assert_eq!(jwk.kty, kty);
        assert_eq!(jwk.crv.as_deref(), crv);
        assert_eq!(jwk.alg.as_deref(), Some(alg.as_str()));
        assert_eq!(jwk.use_.as_deref(), Some("sig"));
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
        alg: Some("HS256".into()),
        crv: None,
        x: None,
        ..ed_jwk()
    });
}

#[test]
fn from_jwk_refuses_an_alg_that_does_not_match_the_key_type() {
    for alg in ["ES256", "ES384", "RS256", "PS256", "HS256", "none"] {
        assert_invalid(&Jwk {
            alg: Some(alg.into()),
            ..ed_jwk()
        });
    }
    let ec = test_key(Algorithm::ES256).verifying_key().to_jwk().unwrap();
    assert_invalid(&Jwk {
        alg: Some("ES384".into()),
        ..ec.clone()
    });
    assert_invalid(&Jwk {
        crv: Some("P-384".into()),
        ..ec
    });
    assert_invalid(&Jwk {
        crv: Some("X25519".into()),
        ..ed_jwk()
    });
}

#[test]
fn from_jwk_refuses_keys_not_for_signing() {
    assert_invalid(&Jwk {
        use_: Some("enc".into()),
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
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        let mut jwk = test_key(alg).verifying_key().to_jwk().unwrap();
        jwk.n = Some(URL_SAFE_NO_PAD.encode(small_modulus()));
        assert_invalid(&jwk);
    }
}

/// A 2047-bit odd number: one bit short of the smallest accepted RSA modulus.
fn small_modulus() -> Vec<u8> {
    let mut n = vec![0xC5u8; 256];
    n[0] = 0x7F;
    n
}

#[test]
fn own_jwks_output_keeps_its_exact_shape() {
    let key = test_key(Algorithm::EdDSA).verifying_key();
    let jwk = key.to_jwk().unwrap();
    assert_eq!(
        serde_json::to_string(&jwk).unwrap(),
        format!(
            r#"{{"kty":"OKP","kid":"{}","alg":"EdDSA","use":"sig","crv":"Ed25519","x":"{}"}}"#,
            key.kid(),
            jwk.x.as_deref().unwrap()
        )
    );
    let rsa = test_key(Algorithm::RS256).verifying_key().to_jwk().unwrap();
    assert_eq!(
        serde_json::to_string(&rsa).unwrap(),
        format!(
            r#"{{"kty":"RSA","kid":"{}","alg":"RS256","use":"sig","n":"{}","e":"AQAB"}}"#,
            rsa.kid,
            rsa.n.as_deref().unwrap()
        )
    );
}

#[test]
fn from_jwk_stays_strict_about_alg_and_use_for_own_keys() {
    assert_invalid(&Jwk {
        alg: None,
        ..ed_jwk()
    });
    assert_invalid(&Jwk {
        use_: None,
        ..ed_jwk()
    });
}

// Identity providers' JWKs.

const ALLOW_ALL: [Algorithm; 5] = ASYMMETRIC;

/// A provider's form of one of the test keys: no `alg`, no `use`.
fn bare(alg: Algorithm) -> Jwk {
    Jwk {
        alg: None,
        use_: None,
        ..test_key(alg).verifying_key().to_jwk().unwrap()
    }
}

fn provider_algs(jwk: &Jwk, allowed: &[Algorithm]) -> Vec<Algorithm> {
    VerifyingKey::from_provider_jwk(jwk, allowed)
        .unwrap()
        .iter()
        .map(VerifyingKey::alg)
        .collect()
}

#[test]
fn a_provider_jwk_without_alg_or_use_gives_one_key_per_allowed_algorithm() {
    let rsa = bare(Algorithm::RS256);
    assert_eq!(
        provider_algs(&rsa, &ALLOW_ALL),
        [Algorithm::RS256, Algorithm::PS256]
    );
    assert_eq!(
        provider_algs(&rsa, &[Algorithm::PS256, Algorithm::ES256]),
        [Algorithm::PS256]
    );
    assert_eq!(
        provider_algs(
            &rsa,
            &[Algorithm::PS256, Algorithm::RS256, Algorithm::PS256]
        ),
        [Algorithm::PS256, Algorithm::RS256]
    );
    for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::ES384] {
        assert_eq!(provider_algs(&bare(alg), &ALLOW_ALL), [alg]);
    }
    // Each key verifies what the original signs, under the same kid.
    for alg in ASYMMETRIC {
        let keys = VerifyingKey::from_provider_jwk(&bare(alg), &[alg]).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid(), test_key(alg).kid());
        assert!(self_verifies(test_key(alg), &keys[0]), "{alg}");
    }
}

#[test]
fn a_provider_jwk_never_yields_hs256() {
    let allowed = [Algorithm::HS256, Algorithm::RS256];
    assert_eq!(
        provider_algs(&bare(Algorithm::RS256), &allowed),
        [Algorithm::RS256]
    );
    assert!(matches!(
        VerifyingKey::from_provider_jwk(&bare(Algorithm::RS256), &[Algorithm::HS256]),
        Err(KeyError::NotAllowed { .. })
    ));
    let hs = Jwk {
        alg: Some("HS256".into()),
        ..bare(Algorithm::RS256)
    };
    assert!(matches!(
        VerifyingKey::from_provider_jwk(&hs, &allowed),
        Err(KeyError::InvalidKey(_))
    ));
    let oct = Jwk {
        kty: "oct".into(),
        n: None,
        e: None,
        ..bare(Algorithm::RS256)
    };
    assert!(matches!(
        VerifyingKey::from_provider_jwk(&oct, &allowed),
        Err(KeyError::InvalidKey(_))
    ));
}

#[test]
fn a_provider_encryption_key_is_its_own_error_and_other_uses_are_invalid() {
    let enc = Jwk {
        use_: Some("enc".into()),
        ..bare(Algorithm::RS256)
    };
    match VerifyingKey::from_provider_jwk(&enc, &ALLOW_ALL) {
        Err(KeyError::NotForSignature(kid)) => assert_eq!(kid, enc.kid),
        other => panic!("{other:?}"),
    }
    let sig = Jwk {
        use_: Some("sig".into()),
        ..bare(Algorithm::RS256)
    };
    assert_eq!(provider_algs(&sig, &[Algorithm::RS256]), [Algorithm::RS256]);
    for odd in ["SIG", "", "verify"] {
        let jwk = Jwk {
            use_: Some(odd.into()),
            ..bare(Algorithm::RS256)
        };
        assert!(matches!(
            VerifyingKey::from_provider_jwk(&jwk, &ALLOW_ALL),
            Err(KeyError::InvalidKey(_))
        ));
    }
}

#[test]
fn a_provider_jwks_with_extra_members_is_read() {
    // The shape Keycloak, Entra ID and others serve: certificates, thumbprints, key_ops.
    let rsa = bare(Algorithm::RS256);
    let ec = bare(Algorithm::ES384);
    let text = format!(
        r#"{{"keys":[
            {{"kid":"{}","kty":"RSA","alg":"RS256","use":"sig","n":"{}","e":"AQAB",
              "x5c":["MIIC"],"x5t":"abc","x5t#S256":"def","key_ops":["verify"],"ext":true,
              "issuer":"https://login.example"}},
            {{"kid":"{}","kty":"EC","crv":"P-384","x":"{}","y":"{}","key_ops":["verify"]}},
            {{"kid":"enc-1","kty":"RSA","use":"enc","alg":"RSA-OAEP","n":"{}","e":"AQAB"}}
        ]}}"#,
        rsa.kid,
        rsa.n.as_deref().unwrap(),
        ec.kid,
        ec.x.as_deref().unwrap(),
        ec.y.as_deref().unwrap(),
        rsa.n.as_deref().unwrap(),
    );
    let jwks: Jwks = serde_json::from_str(&text).unwrap();
    let results: Vec<_> = jwks
        .keys
        .iter()
        .map(|jwk| VerifyingKey::from_provider_jwk(jwk, &ALLOW_ALL))
        .collect();
    assert_eq!(
        results[0]
            .as_ref()
            .unwrap()
            .iter()
            .map(VerifyingKey::alg)
            .collect::<Vec<_>>(),
        [Algorithm::RS256]
    );
    assert_eq!(
        results[1]
            .as_ref()
            .unwrap()
            .iter()
            .map(VerifyingKey::alg)
            .collect::<Vec<_>>(),
        [Algorithm::ES384]
    );
    assert!(matches!(results[2], Err(KeyError::NotForSignature(_))));
    // Written back, the unknown members are gone and absent alg/use stay absent.
    let out = serde_json::to_value(&jwks.keys[1]).unwrap();
    assert!(out.get("key_ops").is_none() && out.get("alg").is_none() && out.get("use").is_none());
}

#[test]
fn a_provider_jwk_whose_alg_is_outside_the_allowlist_is_not_allowed() {
    let rs = Jwk {
        alg: Some("RS256".into()),
        ..bare(Algorithm::RS256)
    };
    assert_eq!(provider_algs(&rs, &ALLOW_ALL), [Algorithm::RS256]);
    for allowed in [
        &[Algorithm::PS256][..],
        &[Algorithm::EdDSA, Algorithm::ES256],
        &[],
    ] {
        assert!(matches!(
            VerifyingKey::from_provider_jwk(&rs, allowed),
            Err(KeyError::NotAllowed { .. })
        ));
    }
    // An algorithm tokengate does not implement is not allowed either.
    for alg in ["RS384", "RS512", "PS512", "ES512", "RSA-OAEP", "none"] {
        let jwk = Jwk {
            alg: Some(alg.into()),
            ..bare(Algorithm::RS256)
        };
        assert!(matches!(
            VerifyingKey::from_provider_jwk(&jwk, &ALLOW_ALL),
            Err(KeyError::NotAllowed { .. })
        ));
    }
    // Without alg, a key none of the allowed algorithms can use.
    assert!(matches!(
        VerifyingKey::from_provider_jwk(&bare(Algorithm::ES384), &[Algorithm::ES256]),
        Err(KeyError::NotAllowed { .. })
    ));
}

#[test]
fn a_provider_jwk_whose_alg_does_not_match_its_key_type_is_invalid() {
    let cases = [
        (Algorithm::RS256, "ES256"),
        (Algorithm::RS256, "EdDSA"),
        (Algorithm::ES256, "ES384"),
        (Algorithm::ES384, "ES256"),
        (Algorithm::ES256, "RS256"),
        (Algorithm::EdDSA, "ES256"),
        (Algorithm::ES256, "EdDSA"),
    ];
    for (key, alg) in cases {
        let jwk = Jwk {
            alg: Some(alg.into()),
            ..bare(key)
        };
        assert!(
            matches!(
                VerifyingKey::from_provider_jwk(&jwk, &ALLOW_ALL),
                Err(KeyError::InvalidKey(_))
            ),
            "{key} key with alg {alg}"
        );
    }
    // Members of another key type, or a curve on an RSA key.
    let rsa_with_crv = Jwk {
        crv: Some("P-256".into()),
        ..bare(Algorithm::RS256)
    };
    let ec_with_n = Jwk {
        n: Some("AQAB".into()),
        ..bare(Algorithm::ES256)
    };
    let unknown_curve = Jwk {
        crv: Some("P-521".into()),
        ..bare(Algorithm::ES256)
    };
    for jwk in [rsa_with_crv, ec_with_n, unknown_curve] {
        assert!(matches!(
            VerifyingKey::from_provider_jwk(&jwk, &ALLOW_ALL),
            Err(KeyError::InvalidKey(_))
        ));
    }
}

#[test]
fn a_provider_rsa_key_under_2048_bits_or_with_a_bad_exponent_is_invalid() {
    let small = Jwk {
        n: Some(URL_SAFE_NO_PAD.encode(small_modulus())),
        ..bare(Algorithm::RS256)
    };
    for allowed in [&[Algorithm::RS256][..], &[Algorithm::PS256]] {
        assert!(matches!(
            VerifyingKey::from_provider_jwk(&small, allowed),
            Err(KeyError::InvalidKey(_))
        ));
    }
    for e in [&[1u8][..], &[0, 1, 0, 0], &[], &[1, 0, 0, 0, 0, 1]] {
        let jwk = Jwk {
            e: Some(URL_SAFE_NO_PAD.encode(e)),
            ..bare(Algorithm::RS256)
        };
        assert!(matches!(
            VerifyingKey::from_provider_jwk(&jwk, &ALLOW_ALL),
            Err(KeyError::InvalidKey(_))
        ));
    }
    // A leading zero byte on n, which some providers write, is read as the same key.
    let rsa = bare(Algorithm::RS256);
    let mut n = vec![0u8];
    n.extend(URL_SAFE_NO_PAD.decode(rsa.n.as_deref().unwrap()).unwrap());
    let padded = Jwk {
        n: Some(URL_SAFE_NO_PAD.encode(n)),
        ..rsa.clone()
    };
    let keys = VerifyingKey::from_provider_jwk(&padded, &[Algorithm::RS256]).unwrap();
    assert!(self_verifies(test_key(Algorithm::RS256), &keys[0]));
    assert_eq!(keys[0].to_jwk().unwrap().n, rsa.n);
}

#[test]
fn a_provider_jwk_without_kid_or_with_a_bad_point_is_invalid() {
    let jwks: Jwks =
        serde_json::from_str(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]}"#).unwrap();
    assert_eq!(jwks.keys[0].kid, "");
    assert!(matches!(
        VerifyingKey::from_provider_jwk(&jwks.keys[0], &ALLOW_ALL),
        Err(KeyError::InvalidKey(_))
    ));
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = Jwk {
        x: Some(URL_SAFE_NO_PAD.encode(identity)),
        ..bare(Algorithm::EdDSA)
    };
    let mut off_curve = bare(Algorithm::ES384);
    let mut y = URL_SAFE_NO_PAD
        .decode(off_curve.y.as_deref().unwrap())
        .unwrap();
    y[47] ^= 1;
    off_curve.y = Some(URL_SAFE_NO_PAD.encode(y));
    let short = Jwk {
        x: Some(URL_SAFE_NO_PAD.encode([7u8; 32])),
        ..bare(Algorithm::ES384)
    };
    for jwk in [weak, off_curve, short] {
        assert!(matches!(
            VerifyingKey::from_provider_jwk(&jwk, &ALLOW_ALL),
            Err(KeyError::InvalidKey(_))
        ));
    }
}
