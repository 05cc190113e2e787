//! A few words for a `User-Agent`: "Chrome on Android", "Firefox on Windows".

/// Browser and operating system named by `user_agent`, in a few words.
///
/// ```
/// use tokengate_server::pages::device::describe;
/// let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";
/// assert_eq!(describe(Some(ua)), "Chrome on Linux");
/// assert_eq!(describe(None), "Unknown device");
/// ```
pub fn describe(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent.filter(|ua| !ua.trim().is_empty()) else {
        return "Unknown device".to_owned();
    };
    let browser = browser(ua);
    match os(ua) {
        Some(os) => format!("{browser} on {os}"),
        None => browser.to_owned(),
    }
}

fn browser(ua: &str) -> &'static str {
    // Order matters: Edge and Opera also say "Chrome", Chrome also says "Safari".
    const BROWSERS: &[(&str, &str)] = &[
        ("Edg/", "Edge"),
        ("EdgA/", "Edge"),
        ("OPR/", "Opera"),
        ("SamsungBrowser/", "Samsung Internet"),
        ("Firefox/", "Firefox"),
        ("FxiOS/", "Firefox"),
        ("HeadlessChrome/", "Headless Chrome"),
        ("CriOS/", "Chrome"),
        ("Chromium/", "Chromium"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
        ("Wget/", "Wget"),
        ("python-requests/", "Python requests"),
        ("reqwest", "reqwest"),
    ];
    BROWSERS
        .iter()
        .find(|(needle, _)| ua.contains(needle))
        .map_or("Unknown browser", |(_, name)| name)
}

fn os(ua: &str) -> Option<&'static str> {
    const SYSTEMS: &[(&str, &str)] = &[
        ("Android", "Android"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("CrOS", "ChromeOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Macintosh", "macOS"),
        ("Linux", "Linux"),
        ("FreeBSD", "FreeBSD"),
    ];
    SYSTEMS
        .iter()
        .find(|(needle, _)| ua.contains(needle))
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_browsers_and_systems_are_named() {
        let cases = [
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0", "Edge on Windows"),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", "Safari on iPhone"),
            ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36", "Chrome on Android"),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:127.0) Gecko/20100101 Firefox/127.0", "Firefox on macOS"),
            ("curl/8.5.0", "curl"),
            ("something else", "Unknown browser"),
        ];
        for (ua, expected) in cases {
            assert_eq!(describe(Some(ua)), expected, "{ua}");
        }
        assert_eq!(describe(Some("  ")), "Unknown device");
    }
}
