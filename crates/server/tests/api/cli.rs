//! The `sessiond` command line: `check`, and flag > environment > file precedence.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::harness::sessiond;

/// Starts `serve` with `cmd` and returns the first stdout line (or the error output).
fn first_line(mut cmd: Command) -> Result<String, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.is_empty() {
        let out = child.wait_with_output().unwrap();
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    Ok(line)
}

#[test]
fn check_prints_the_demo_app_graph() {
    let out = sessiond().arg("check").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("account demo (6c1f7c3e-8a5b-4d1e-9f20-3b7a2c9d4e51)"),
        "{text}"
    );
    assert!(
        text.contains("1. vtex.store-session (runOnCreate)"),
        "{text}"
    );
    // authentication feeds profile (storeUserId) and impersonate (adminUserEmail).
    assert!(
        text.contains(
            "2. vtex.authentication-session -> vtex.profile-session, vtex.impersonate-session"
        ),
        "{text}"
    );
    assert!(text.ends_with("configuration ok\n"), "{text}");
}

#[test]
fn check_refuses_a_bad_configuration_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    for (body, needle) in [
        ("lisen = \"x\"\n[[accounts]]\nname = \"a\"\n", "lisen"),
        (
            "[[accounts]]\nname = \"a\"\n[[accounts.apps]]\nname = \"vtex.nope\"\n",
            "vtex.nope",
        ),
        (
            "default_account = \"zz\"\n[[accounts]]\nname = \"a\"\n",
            "zz",
        ),
        (
            "session_ttl = \"soon\"\n[[accounts]]\nname = \"a\"\n",
            "session_ttl",
        ),
        (
            "admin_token = \"\"\n[[accounts]]\nname = \"a\"\n",
            "admin_token must be at least 16 characters",
        ),
        (
            "[[accounts]]\nname = \"a\"\n[[accounts.apps]]\nname = \"vtex.store-session\"\nwhen = { isAuthenticated = \"true\" }\n",
            "`when.isAuthenticated`: a condition's key must be `namespace.key`",
        ),
        (
            "[[accounts]]\nname = \"a\"\n[[accounts.apps]]\nname = \"vtex.store-session\"\nwhen = { \"store.channel\" = 3 }\n",
            "`when.store.channel` must be a string, a list of strings, true (set) or false (absent)",
        ),
    ] {
        std::fs::write(&path, body).unwrap();
        let out = sessiond()
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{body}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{needle}: {err}");
        // Said once: no `Caused by:` repeating the message, no backtrace.
        let first = err.lines().next().unwrap().trim_start_matches("Error: ");
        assert_eq!(err.matches(first).count(), 1, "{err}");
        assert!(
            !err.contains("Caused by") && !err.contains("backtrace"),
            "{err}"
        );
    }
}

#[test]
fn flags_beat_environment_beats_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sessiond.toml");
    std::fs::write(
        &config,
        "listen = \"not-an-address\"\nstore = \"nope\"\n[[accounts]]\nname = \"a\"\n",
    )
    .unwrap();
    // The file alone is refused.
    let mut cmd = sessiond();
    cmd.arg("serve").arg("--config").arg(&config);
    assert!(first_line(cmd).unwrap_err().contains("not-an-address"));
    // Environment beats the file; the flag beats the environment.
    let mut cmd = sessiond();
    cmd.arg("serve")
        .arg("--store")
        .arg("memory")
        .env("SESSIOND_CONFIG", &config)
        .env("SESSIOND_LISTEN", "127.0.0.1:0")
        .env("SESSIOND_STORE", "also-nope")
        .env("SESSIOND_DATA_DIR", dir.path().join("data"));
    let line = first_line(cmd).unwrap();
    assert!(
        line.starts_with("sessiond listening on http://127.0.0.1:"),
        "{line}"
    );
    // A bad flag is refused even when the environment is fine.
    let mut cmd = sessiond();
    cmd.arg("serve")
        .arg("--store")
        .arg("postgres://x")
        .env("SESSIOND_CONFIG", &config)
        .env("SESSIOND_LISTEN", "127.0.0.1:0")
        .env("SESSIOND_STORE", "memory");
    assert!(first_line(cmd).unwrap_err().contains("postgres://x"));
}

#[test]
fn check_warns_about_overlaps_unwritten_inputs_and_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.toml");
    std::fs::write(
        &path,
        r#"
[[accounts]]
name = "shop"
[[accounts.apps]]
name = "ping"
url = "http://127.0.0.1:9/"
configuration = { input = { public = ["a"] }, output = { n = ["b"] } }
[[accounts.apps]]
name = "pong"
url = "http://127.0.0.1:9/"
configuration = { input = { n = ["b"], ghost = ["x"] }, output = { public = ["a"], n = ["c"] } }
[[accounts.apps]]
name = "copycat"
url = "http://127.0.0.1:9/"
configuration = { input = { public = ["z"] }, output = { n = ["b"] } }
[[accounts.apps]]
name = "vip"
url = "http://127.0.0.1:9/"
when = { "n.c" = ["gold", "silver"], "crm.level" = true }
configuration = { input = { public = ["z"] }, output = { vip = ["perks"] } }
"#,
    )
    .unwrap();
    let out = sessiond()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1. ping -> pong"), "{text}");
    assert!(text.contains("2. pong -> ping, vip"), "{text}");
    assert!(
        text.contains("4. vip [when n.c = [\"gold\", \"silver\"], crm.level = true] -> -"),
        "{text}"
    );
    assert!(
        text.contains("warning: vip's condition `crm.level = true` tests namespace `crm`, which no installed app writes"),
        "{text}"
    );
    assert!(
        text.contains("warning: ping and copycat both write n.b; copycat (installed later) wins"),
        "{text}"
    );
    assert!(
        text.contains(
            "warning: pong watches ghost.{x} but no installed app writes namespace `ghost`"
        ),
        "{text}"
    );
    assert!(
        text.contains("warning: input/output cycle: ping -> pong -> ping"),
        "{text}"
    );
    // The graph labels an edge into a conditional app with its condition.
    let out = sessiond()
        .args(["check", "--format", "dot", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let dot = String::from_utf8(out.stdout).unwrap();
    assert!(
        dot.contains("\"pong\" -> \"vip\" [label=\"when n.c = ['gold', 'silver']\"];"),
        "{dot}"
    );
}

#[test]
fn auth_token_refuses_what_is_not_an_email() {
    let out = sessiond()
        .args(["auth-token", "--account", "demo", "--email", ""])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an email address"));
    let out = sessiond()
        .args(["auth-token", "--account", "nope", "--email", "a@b.c"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account named `nope`"));
}

/// `check --format dot` is a graph Graphviz draws (Debian's graphviz is installed when
/// missing), `--format mermaid` a flowchart; both link the apps as the text report does.
#[test]
fn check_draws_the_app_graph_in_dot_and_mermaid() {
    let graph = |format: &str| {
        let out = sessiond()
            .args(["check", "--format", format])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let dot = graph("dot");
    assert!(dot.starts_with("digraph \"demo\" {"), "{dot}");
    assert!(dot.contains(
        "\"vtex.authentication-session\" -> \"vtex.profile-session\" [label=\"authentication.storeUserId\"];"
    ), "{dot}");
    assert!(dot.contains(
        "\"vtex.profile-session\" -> \"vtex.rnb-session\" [label=\"profile.email\\nprofile.priceTables\"];"
    ), "{dot}");
    assert!(dot.contains(
        "\"vtex.store-session\" [label=\"vtex.store-session\\n(runOnCreate)\", style=bold];"
    ));
    sessiond_testkit::ensure_debian(&["graphviz"], &["dot"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apps.dot");
    std::fs::write(&file, &dot).unwrap();
    let drawn = std::process::Command::new("dot")
        .arg("-Tsvg")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        drawn.status.success(),
        "{}",
        String::from_utf8_lossy(&drawn.stderr)
    );
    let svg = String::from_utf8_lossy(&drawn.stdout);
    assert!(
        svg.contains("<svg") && svg.contains("vtex.impersonate&#45;session"),
        "{svg}"
    );
    // One edge per app that feeds another, as in the text report (6 in the demo).
    assert_eq!(dot.matches(" -> ").count(), 6, "{dot}");
    let mermaid = graph("mermaid");
    assert!(
        mermaid.starts_with("flowchart LR\n  subgraph a0[\"demo\"]\n"),
        "{mermaid}"
    );
    assert!(
        mermaid.contains("    a0_1 -->|\"authentication.storeUserId\"| a0_2\n"),
        "{mermaid}"
    );
    assert_eq!(mermaid.matches(" -->|").count(), 6, "{mermaid}");
}
