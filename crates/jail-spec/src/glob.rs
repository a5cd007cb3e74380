//! Path globs of diff policies: `*` matches within one path component, `?` one
//! character of a component, and `**` (a whole component) any number of
//! components, none included (`/workspace/**` matches `/workspace` too).

/// Checks a glob's shape: absolute, no `.`/`..`/empty components, `**` only as
/// a whole component.
pub fn check_glob(pattern: &str) -> Result<(), String> {
    if !pattern.starts_with('/') {
        return Err("must be absolute (start with /)".into());
    }
    if pattern.contains('\0') {
        return Err("must not contain NUL".into());
    }
    if pattern == "/" {
        return Ok(());
    }
    for component in pattern[1..].split('/') {
        match component {
            "" => {
                return Err("must not contain empty components (\"//\" or a trailing \"/\")".into())
            }
            "." | ".." => return Err("must not contain \".\" or \"..\" components".into()),
            "**" => {}
            c if c.contains("**") => {
                return Err("** must be a whole path component (/a/**/b)".into())
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether the absolute `path` matches `pattern`.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let components = |s: &str| -> Vec<String> {
        s.split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let pattern = components(pattern);
    let path = components(path);
    let pattern: Vec<&str> = pattern.iter().map(String::as_str).collect();
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    match_components(&pattern, &path)
}

fn match_components(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| match_components(rest, &path[skip..])),
        Some((first, rest)) => match path.split_first() {
            Some((component, path_rest)) => {
                let pattern: Vec<char> = first.chars().collect();
                let text: Vec<char> = component.chars().collect();
                match_component(&pattern, &text) && match_components(rest, path_rest)
            }
            None => false,
        },
    }
}

fn match_component(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => (0..=text.len()).any(|skip| match_component(rest, &text[skip..])),
        Some(('?', rest)) => !text.is_empty() && match_component(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && match_component(rest, &text[1..]),
    }
}
