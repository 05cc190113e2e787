//! `tokengate backup`: an online copy of the SQLite database taken while the server signs
//! users out, from which a server restores every revocation made before it; and the
//! restore procedure of docs/operations.md for the revocations made after it.

use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::gate::unix_now;
use common::*;
use reqwest::StatusCode;

/// A server on a copy of `backup` (what restoring it gives).
fn serve_on(backup: &Path) -> Server {
    let url = format!("sqlite://{}", backup.display());
    Server::start_with_env(&[("TOKENGATE_DATABASE_URL", &url)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_sign_outs_restores_the_revocations_made_before_it() {
    let server = Server::start();
    let client = server.client();
    let email = client.new_user("backup").await;
    let mut tokens = Vec::new();
    for _ in 0..12 {
        tokens.push(client.signin_ok(&email).await);
    }
    let kept = tokens.pop().unwrap();
    let after = tokens.split_off(6);
    let before = tokens;
    for signed_out in &before {
        client
            .signout(&signed_out.access_token)
            .await
            .expect(StatusCode::NO_CONTENT);
    }

    // While the backup runs, users keep signing in and out, and every answer is the usual.
    let done = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (client, done, email, kept) = (
            client.clone(),
            done.clone(),
            email.clone(),
            kept.access_token.clone(),
        );
        async move {
            let mut signed_out = 0;
            while !done.load(Ordering::Acquire) || signed_out < 3 {
                let session = client.signin_ok(&email).await;
                client
                    .signout(&session.access_token)
                    .await
                    .expect(StatusCode::NO_CONTENT);
                client.me(&kept).await.expect(StatusCode::OK);
                signed_out += 1;
            }
            signed_out
        }
    });
    let to = server.data_dir().with_file_name("backup.db");
    let target = to.to_str().unwrap().to_owned();
    let out = tokio::task::block_in_place(|| server.cli_ok(&["backup", "--to", &target], None));
    done.store(true, Ordering::Release);
    assert!(out.stdout.contains("snapshot taken at"), "{}", out.stdout);
    let signed_out_meanwhile = traffic.await.unwrap();
    assert!(signed_out_meanwhile >= 3);

    // Revoked after the backup: not in it.
    for signed_out in &after {
        client
            .signout(&signed_out.access_token)
            .await
            .expect(StatusCode::NO_CONTENT);
    }
    // A second backup to the same file is refused; the first is untouched.
    let refused = server.cli(&["backup", "--to", &target], None);
    assert!(
        !refused.success && refused.stderr.contains("--force"),
        "{refused:?}"
    );

    let restored = serve_on(&to);
    let client = restored.client();
    for signed_out in &before {
        client.assert_signed_out(signed_out).await;
    }
    client.me(&kept.access_token).await.expect(StatusCode::OK);
    // What the restore procedure is for: these were signed out after the backup, and the
    // restored database does not know it.
    for signed_out in &after {
        client
            .me(&signed_out.access_token)
            .await
            .expect(StatusCode::OK);
    }
    let revived = client.refresh_ok(&after[0].refresh_token).await;

    // The procedure: revoke every token issued, and end every session created, before the
    // restore. The cutoff is in whole seconds (`iat < cutoff`): taken at least a second
    // after the last token was issued.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cutoff = unix_now().to_string();
    let out = restored.cli_ok(&["revoke", "--issued-before", &cutoff, "--sessions"], None);
    // `after` and `kept`, and a session of the traffic if the snapshot caught it live.
    let ended = ["ended 6 session(s)", "ended 7 session(s)"];
    assert!(
        ended.iter().any(|e| out.stdout.contains(e)),
        "{}",
        out.stdout
    );
    for signed_out in after.iter().chain([&kept, &revived]) {
        until_refused(
            &client,
            &signed_out.access_token,
            Duration::from_secs(5),
            "the cutoff to reach the restored server",
        )
        .await;
    }
    for signed_out in after[1..].iter().chain([&kept, &revived]) {
        client
            .refresh(&signed_out.refresh_token)
            .await
            .expect_error(StatusCode::UNAUTHORIZED);
    }
    // Signing in again works at once.
    let fresh = client.signin_ok(&email).await;
    client.me(&fresh.access_token).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn backup_refuses_postgres_and_a_missing_database() {
    let server = Server::start();
    let to = server.data_dir().with_file_name("backup.db");
    let target = to.to_str().unwrap();
    let postgres = server.cli(
        &[
            "--database-url",
            "postgres://postgres@127.0.0.1:5432/test",
            "backup",
            "--to",
            target,
        ],
        None,
    );
    assert!(!postgres.success, "{postgres:?}");
    assert!(postgres.stderr.contains("pg_dump"), "{postgres:?}");
    let missing = server.cli(
        &[
            "--database-url",
            "sqlite:///nonexistent/tokengate.db",
            "backup",
            "--to",
            target,
        ],
        None,
    );
    assert!(!missing.success, "{missing:?}");
    assert!(
        missing
            .stderr
            .contains("no database at /nonexistent/tokengate.db"),
        "{missing:?}"
    );
    assert!(!to.exists());
}
