//! The Dockerfile against CI: its build stages run only commands that
//! .ci/run also runs (verbatim, one command line), and its runtime stage
//! runs as a non-root user. No Docker engine is needed: both files are read.

/// One stage: its `FROM` line and its instructions (continuations joined).
#[derive(Debug)]
pub(crate) struct Stage {
    pub(crate) from: String,
    pub(crate) instructions: Vec<(String, String)>,
}

/// The stages of a Dockerfile.
pub(crate) fn stages(dockerfile: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head.trim());
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let (word, rest) = (word.to_ascii_uppercase(), rest.trim().to_owned());
        if word == "FROM" {
            stages.push(Stage {
                from: rest,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((word, rest));
        }
    }
    stages
}

/// Every build-stage `RUN` must be a command line of `ci`; the runtime
/// stage must set a non-root `USER`. The problems, one line each.
pub(crate) fn check(dockerfile: &str, ci: &str) -> Vec<String> {
    let stages = stages(dockerfile);
    let mut problems = Vec::new();
    let Some((runtime, build)) = stages.split_last() else {
        return vec!["no FROM".to_owned()];
    };
    if build.is_empty() {
        problems.push("not multi-stage: no build stage before the runtime stage".to_owned());
    }
    let ci_lines: Vec<&str> = ci.lines().map(str::trim).collect();
    let runs = build
        .iter()
        .flat_map(|s| &s.instructions)
        .filter(|(word, _)| word == "RUN");
    for (_, command) in runs {
        if command.starts_with('[') {
            problems.push(format!(
                "RUN {command}: exec form; write the shell form CI runs"
            ));
        } else if !ci_lines.contains(&command.as_str()) {
            problems.push(format!("RUN {command}: not a command line of .ci/run"));
        }
    }
    if runtime.instructions.iter().any(|(word, _)| word == "RUN") {
        problems.push(format!(
            "runtime stage {}: runs commands (it should only copy)",
            runtime.from
        ));
    }
    let user = runtime
        .instructions
        .iter()
        .rev()
        .find(|(word, _)| word == "USER")
        .map(|(_, user)| user.as_str());
    match user {
        None => problems.push("runtime stage: no USER (say which non-root user runs)".to_owned()),
        Some(user) => {
            let name = user.split(':').next().unwrap_or_default();
            if name == "root" || name == "0" || name.is_empty() {
                problems.push(format!("runtime stage: USER {user} is root"));
            }
        }
    }
    problems
}
