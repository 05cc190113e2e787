//! The HTML of the pages (maud: compile-time templates, every interpolation escaped).
//!
//! One column, system fonts, inline CSS (no asset route, no JavaScript): readable on a
//! phone, 44 px tap targets, visible focus rings, real `<label>`s and `<button>`s.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::schema::SessionView;

const CSS: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;background:#f4f5f7}
main{max-width:40rem;margin:0 auto;padding:1.25rem 1rem 3rem}
header{display:flex;flex-wrap:wrap;align-items:baseline;justify-content:space-between;gap:.5rem;margin-bottom:1rem}
.brand{font-weight:700;font-size:1.1rem}
.who{color:#57606a;overflow-wrap:anywhere}
h1{font-size:1.5rem;margin:.25rem 0 1rem}
form.stack{display:grid;gap:.75rem;background:#fff;padding:1.25rem;border-radius:12px;border:1px solid #d8dee4}
label{font-weight:600}
input[type=email],input[type=password]{width:100%;min-height:44px;padding:.5rem .75rem;font:inherit;border:1px solid #8c959f;border-radius:8px;background:#fff}
button{min-height:44px;padding:.5rem 1.1rem;font:inherit;font-weight:600;border-radius:8px;border:1px solid #1f6feb;background:#1f6feb;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#1f2328;border-color:#8c959f}
button.danger{background:#cf222e;border-color:#cf222e}
:focus-visible{outline:3px solid #fb8500;outline-offset:2px}
.notice{padding:.75rem 1rem;border-radius:8px;margin:0 0 1rem;background:#ddf4ff;border:1px solid #54aeff}
.notice.error{background:#ffebe9;border-color:#ff8182}
ul.sessions{list-style:none;margin:0 0 1.5rem;padding:0;display:grid;gap:.75rem}
.session{background:#fff;border:1px solid #d8dee4;border-radius:12px;padding:1rem;display:flex;flex-wrap:wrap;gap:.75rem;align-items:center;justify-content:space-between}
.session.current{border-color:#1f6feb;box-shadow:0 0 0 1px #1f6feb}
.device{font-weight:600}
.badge{display:inline-block;margin-left:.4rem;padding:0 .5rem;border-radius:999px;background:#1f6feb;color:#fff;font-size:.8rem;font-weight:600;vertical-align:middle}
dl{margin:.25rem 0 0;display:grid;grid-template-columns:auto 1fr;gap:0 .75rem;color:#57606a;font-size:.9rem}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
.muted{color:#57606a}
"#;

/// The page frame: head, header line, main column.
pub fn layout(title: &str, signed_in_as: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // A real `Origin` on the page's own form posts (see `headers`).
                meta name="referrer" content=(crate::headers::PAGE_REFERRER_POLICY);
                title { (title) " · tokengate" }
                style { (PreEscaped(CSS)) }
            }
            body {
                main {
                    header {
                        span.brand { "tokengate" }
                        @if let Some(email) = signed_in_as {
                            span.who { "Signed in as " strong { (email) } }
                        }
                    }
                    (body)
                }
            }
        }
    }
}

/// A status line: `role=alert` for errors (read out at once), `role=status` otherwise.
pub fn notice(text: &str, error: bool) -> Markup {
    html! {
        @if error {
            p.notice.error role="alert" { (text) }
        } @else {
            p.notice role="status" { (text) }
        }
    }
}

/// The sign-in form.
pub fn signin(csrf: &str, email: &str, message: Option<(&str, bool)>) -> Markup {
    let body = html! {
        h1 { "Sign in" }
        @if let Some((text, error)) = message {
            (notice(text, error))
        }
        form.stack method="post" action="/signin" {
            input type="hidden" name="csrf" value=(csrf);
            label for="email" { "Email" }
            input #email type="email" name="email" value=(email) autocomplete="username"
                required autofocus[email.is_empty()];
            label for="password" { "Password" }
            input #password type="password" name="password" autocomplete="current-password"
                required autofocus[!email.is_empty()];
            button type="submit" { "Sign in" }
        }
    };
    layout("Sign in", None, body)
}

/// One row of the sessions list, as the page shows it.
pub struct SessionRow {
    /// The session as the API shows it.
    pub view: SessionView,
    /// "Chrome on Linux".
    pub device: String,
}

/// `/account/sessions`.
pub fn sessions(
    email: &str,
    csrf: &str,
    rows: &[SessionRow],
    message: Option<(&str, bool)>,
) -> Markup {
    let count = rows.len();
    let body = html! {
        h1 { "Your sessions" }
        @if let Some((text, error)) = message {
            (notice(text, error))
        }
        p.muted {
            "You are signed in on " (count) " " (if count == 1 { "device" } else { "devices" })
            ". Sign out any you do not recognise."
        }
        ul.sessions aria-label="Sessions" {
            @for row in rows {
                li.session.current[row.view.current] {
                    div {
                        div.device {
                            (row.device)
                            @if row.view.current { span.badge { "This device" } }
                        }
                        dl {
                            dt { "IP" } dd { (row.view.ip.as_deref().unwrap_or("unknown")) }
                            dt { "Signed in" } dd { (when(&row.view.created_at)) }
                            dt { "Last seen" } dd { (when(&row.view.last_seen_at)) }
                        }
                    }
                    form method="post" action={ "/account/sessions/" (row.view.id) "/signout" } {
                        input type="hidden" name="csrf" value=(csrf);
                        button.secondary type="submit"
                            aria-label={ "Sign out " (row.device) @if row.view.current { " (this device)" } } {
                            @if row.view.current { "Sign out this device" } @else { "Sign out" }
                        }
                    }
                }
            }
        }
        form method="post" action="/account/signout-all" {
            input type="hidden" name="csrf" value=(csrf);
            button.danger type="submit" { "Sign out everywhere" }
        }
    };
    layout("Your sessions", Some(email), body)
}

/// An error page with a way back.
pub fn problem(title: &str, text: &str, back: &str) -> Markup {
    let body = html! {
        h1 { (title) }
        (notice(text, true))
        p { a href=(back) { "Go back" } }
    };
    layout(title, None, body)
}

/// RFC 3339 UTC as "2026-11-29 05:20 UTC".
fn when(rfc3339: &str) -> String {
    match rfc3339.get(..16) {
        Some(minutes) if rfc3339.ends_with('Z') => format!("{} UTC", minutes.replace('T', " ")),
        _ => rfc3339.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_to_the_minute() {
        assert_eq!(when("2026-11-29T05:20:31Z"), "2026-11-29 05:20 UTC");
        assert_eq!(when("odd"), "odd");
    }

    #[test]
    fn interpolated_text_is_escaped() {
        let page = signin("t", "<script>@x", Some(("<b>", true))).into_string();
        assert!(!page.contains("<script>@x"));
        assert!(page.contains("&lt;script&gt;@x"));
        assert!(!page.contains("<b>"));
    }
}
