//! What `sessiond check` knows of an account's apps: which app feeds which (an app's output
//! that another watches, or tests in its `when`), and the warnings (overlapping outputs, inputs
//! nothing writes, conditions nothing can change, feedback cycles). Used by the CLI's report and
//! graphs, the startup summary and the admin API.

use sessiond_core::{AppSpec, Key};

/// Namespaces filled by the manager itself (request, cookies, account) rather than by an app.
const REQUEST_NAMESPACES: [&str; 3] = ["public", "cookie", "account"];

/// ` [when …]`: an app's conditions as written, or nothing.
pub fn conditions(app: &AppSpec) -> String {
    if app.when.is_empty() {
        return String::new();
    }
    let all: Vec<String> = app.when.iter().map(|c| c.describe()).collect();
    format!(" [when {}]", all.join(", "))
}

/// The keys `from` writes that `to` watches (`namespace.key`) or tests in a condition
/// (`when namespace.key = …`).
pub fn linking_keys(from: &AppSpec, to: &AppSpec) -> Vec<String> {
    let mut out = Vec::new();
    for (ns, keys) in &from.output {
        for k in keys {
            let key = Key::new(ns.as_str(), k.as_str());
            if to.watches(&key) {
                out.push(format!("{ns}.{k}"));
            }
            for c in to.when.iter().filter(|c| c.key == key) {
                out.push(format!("when {}", c.describe()));
            }
        }
    }
    out
}

/// For each app, the apps that watch or test one of its outputs.
pub fn feeds(apps: &[AppSpec]) -> Vec<Vec<usize>> {
    apps.iter()
        .map(|app| {
            (0..apps.len())
                .filter(|&j| {
                    app.output.iter().any(|(ns, keys)| {
                        keys.iter()
                            .any(|k| apps[j].triggered_by(&Key::new(ns.as_str(), k.as_str())))
                    })
                })
                .collect()
        })
        .collect()
}

/// The warnings `check` prints for an account's apps (also logged when the server starts).
pub fn app_warnings(apps: &[AppSpec]) -> Vec<String> {
    warnings(apps, &feeds(apps))
}

/// Overlapping outputs, inputs in namespaces nothing writes, and feedback cycles.
pub fn warnings(apps: &[AppSpec], feeds: &[Vec<usize>]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, a) in apps.iter().enumerate() {
        for b in &apps[i + 1..] {
            for (ns, keys) in &a.output {
                for k in keys {
                    if b.writes(&Key::new(ns.as_str(), k.as_str())) {
                        out.push(format!(
                            "{} and {} both write {ns}.{k}; {} (installed later) wins",
                            a.name, b.name, b.name
                        ));
                    }
                }
            }
        }
    }
    for app in apps {
        for (ns, patterns) in &app.input {
            let written = REQUEST_NAMESPACES.contains(&ns.as_str())
                || apps.iter().any(|other| other.output.contains_key(ns));
            if !written {
                let keys: Vec<&str> = patterns.iter().map(|p| p.as_str()).collect();
                out.push(format!(
                    "{} watches {ns}.{{{}}} but no installed app writes namespace `{ns}`",
                    app.name,
                    keys.join(",")
                ));
            }
        }
    }
    for app in apps {
        for c in &app.when {
            let ns = c.key.namespace.as_str();
            let written = REQUEST_NAMESPACES.contains(&ns)
                || apps.iter().any(|other| other.output.contains_key(ns));
            if !written {
                out.push(format!(
                    "{}'s condition `{}` tests namespace `{ns}`, which no installed app writes",
                    app.name,
                    c.describe()
                ));
            }
        }
    }
    for cycle in cycles(feeds) {
        let names: Vec<&str> = cycle.iter().map(|&i| apps[i].name.as_str()).collect();
        let first = names[0];
        out.push(format!(
            "input/output cycle: {} -> {first} (it settles only when the answers stop changing; max_rounds bounds it)",
            names.join(" -> ")
        ));
    }
    out
}

/// The feedback cycles of the app graph: one per strongly connected component of two or more
/// apps (listed from its first app). An app watching its own output is not listed: that is a
/// common, self-settling pattern, visible in the graph itself.
fn cycles(feeds: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = feeds.len();
    let reaches = |from: usize, to: usize| {
        let mut seen = vec![false; n];
        let mut stack = vec![from];
        while let Some(i) = stack.pop() {
            for &j in &feeds[i] {
                if j == to {
                    return true;
                }
                if !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        false
    };
    let mut assigned = vec![false; n];
    let mut out = Vec::new();
    for i in 0..n {
        if assigned[i] || !reaches(i, i) {
            continue;
        }
        let component: Vec<usize> = (0..n)
            .filter(|&j| j == i || (reaches(i, j) && reaches(j, i)))
            .collect();
        for &j in &component {
            assigned[j] = true;
        }
        if component.len() > 1 {
            out.push(component);
        }
    }
    out
}
