use super::*;

fn lines(text: &str) -> Vec<String> {
    parse(text).commands.iter().map(|c| c.line().to_owned()).collect()
}

#[test]
fn lists_and_pipes_are_split_into_simple_commands() {
    assert_eq!(lines("cargo build && curl x | sh"), ["cargo build", "curl x", "sh"]);
    assert_eq!(lines("a; b || c"), ["a", "b", "c"]);
    let p = parse("cargo build && curl x | sh");
    assert_eq!(p.pipelines, vec![vec![Some(1), Some(2)]]);
    assert!(parse("cargo build && curl x | sh x.sh").unreadable.is_none());
}

#[test]
fn substitutions_and_subshells_are_found() {
    assert_eq!(lines("echo $(rm -rf /)"), ["echo $(rm -rf /)", "rm -rf /"]);
    assert_eq!(lines("echo `touch x`"), ["echo `touch x`", "touch x"]);
    assert_eq!(lines("(cd a && make)"), ["cd a", "make"]);
    assert_eq!(lines("diff <(ls a) b"), ["diff <(ls a) b", "ls a"]);
    assert_eq!(lines("for f in *; do rm \"$f\"; done"), ["rm \"$f\""]);
}

#[test]
fn quotes_are_removed_where_literal() {
    assert_eq!(lines(r#"git commit -m "a b" 'c d' e\ f"#), ["git commit -m a b c d e f"]);
    assert_eq!(parse(r#"echo "x\"y""#).commands[0].words, ["echo", "x\"y"]);
}

#[test]
fn redirections_are_paths() {
    let p = parse("echo hi > /etc/passwd 2>&1; cat < in.txt >> out.txt");
    assert_eq!(p.redirects, ["/etc/passwd", "out.txt"]);
    assert_eq!(p.inputs, ["in.txt"]);
    assert_eq!(parse("ls &> /tmp/log").redirects, ["/tmp/log"]);
}

#[test]
fn wrappers_and_nested_shells_are_seen_through() {
    let p = parse("env A=1 sudo -u x /usr/bin/rm -rf /");
    assert!(p.commands[0].suspects.contains(&"rm -rf /".to_owned()), "{:?}", p.commands[0].suspects);
    let p = parse("env A=1 nohup /usr/bin/rm -rf /");
    assert!(p.commands[0].lines.contains(&"rm -rf /".to_owned()), "{:?}", p.commands[0].lines);
    assert!(parse("rm x").commands[0].suspects.is_empty());
    // The inner command line is taken apart first.
    assert_eq!(lines("bash -c 'curl x | sh'"), ["curl x", "sh", "bash -c curl x | sh"]);
    assert_eq!(parse("bash -c 'curl x | sh'").pipelines, vec![vec![Some(0), Some(1)]]);
    assert_eq!(lines("eval 'rm -rf /'"), ["rm -rf /", "eval rm -rf /"]);
    assert!(parse("bash -c \"$X\"").unreadable.is_some());
}

#[test]
fn what_cannot_be_read_is_said() {
    assert!(parse("$CMD -rf /").unreadable.unwrap().contains("computed"));
    assert!(parse("echo 'unterminated").unreadable.is_some());
    assert!(parse("if then fi (").unreadable.is_some());
    assert!(parse(&"a ".repeat(MAX_COMMAND_BYTES)).unreadable.is_some());
    assert!(parse("ls -la").unreadable.is_none());
    // A computed folder with a literal program name is readable by its basename.
    let p = parse("\"$TMPDIR/attack\" --go && $HOME/bin/rm -rf /");
    assert!(p.unreadable.is_none(), "{p:?}");
    assert!(p.commands[1].lines.contains(&"rm -rf /".to_owned()));
    assert!(parse("\"$D/$X\" a").unreadable.is_some());
    assert!(parse("$(which rm) -rf /").unreadable.is_some());
}

#[test]
fn fork_bombs_are_recursive_functions() {
    assert_eq!(parse(":(){ :|:& };:").recursive_functions, [":"]);
    assert_eq!(parse("f() { f | f & }; f").recursive_functions, ["f"]);
    assert!(parse("f() { echo hi; }; f").recursive_functions.is_empty());
}

#[test]
fn text_readings_before_the_parser() {
    assert_eq!(lines("tou\\\nch x"), ["touch x"]);
    assert_eq!(lines("echo 'a\\\nb'"), ["echo a\\\nb"]);
    assert_eq!(lines("touch $'a\\x41\\n'"), ["touch aA\n"]);
    assert_eq!(lines("touch x{1,2}y"), ["touch x1y x2y"]);
    assert_eq!(raw_commands("{rm,-rf,/} && a|b"), [vec!["rm", "-rf", "/"], vec!["a"], vec!["b"]]);
}

#[test]
fn shells_behind_options_wrappers_and_inputs_are_read() {
    assert!(lines("bash -ec 'rm x'").contains(&"rm x".to_owned()));
    assert!(lines("bash -o pipefail -c 'rm x'").contains(&"rm x".to_owned()));
    assert!(lines("env -i sh -c 'rm x'").contains(&"rm x".to_owned()));
    assert!(lines("echo 'rm x' | sh").contains(&"rm x".to_owned()));
    assert!(lines("sh <<< 'rm x'").contains(&"rm x".to_owned()));
    assert!(parse("cat f | sh").unreadable.is_some());
    assert!(parse("cat f | sh script.sh").unreadable.is_none());
    let p = parse("sh <(curl x)");
    assert!(p.pipelines.contains(&vec![Some(1), Some(0)]), "{p:?}");
    assert_eq!(parse("a | (sh)").pipelines, vec![vec![Some(0), Some(1)]]);
    assert_eq!(parse("f(){ g|g& }; g(){ f|f& }; f").recursive_functions, ["f", "g"]);
}
