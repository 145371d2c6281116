//! `cargo xtask deploy --image IMG [--config FILE] [--out DIR]`: renders `deploy/` for one image
//! and one daemon config.
//!
//! The output directory is a self-contained kustomize directory (`kubectl apply -k DIR`) with
//! the same files as `deploy/base`, plus `vwire.yaml`, the same objects in one file
//! (`kubectl apply -f DIR/vwire.yaml`, no kustomize needed), and a copy of `deploy/samples`.
//! Rendering is plain text substitution on the base files, so what is applied is what the
//! repository reviews.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

use crate::util::{target_dir, workspace_root};

/// The image name the base manifests use; replaced by `--image`.
const BASE_IMAGE: &str = "vwire";
/// The base resources, in apply order.
const RESOURCES: &[&str] = &["namespace.yaml", "configmap.yaml", "daemonset.yaml"];
/// The ConfigMap key holding the daemon's config.
const CONFIG_KEY: &str = "vwire.toml";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container image of the daemon and the CNI installer, e.g. registry.example.com/vwire:0.1.0.
    #[arg(long)]
    pub image: String,
    /// Daemon config (TOML) for the ConfigMap; default: the one in deploy/base/configmap.yaml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output directory; default: target/deploy.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Renders the manifests into the output directory.
///
/// # Errors
/// A bad image reference, an unreadable config, or a file that cannot be read or written.
pub fn run(args: Args) -> Result<()> {
    let out = args.out.unwrap_or_else(|| target_dir().join("deploy"));
    let config = args
        .config
        .as_deref()
        .map(|p| fs::read_to_string(p).with_context(|| format!("read {}", p.display())))
        .transpose()?;
    render(
        &workspace_root().join("deploy"),
        &args.image,
        config.as_deref(),
        &out,
    )?;
    println!("deploy: rendered for {} into {}", args.image, out.display());
    println!(
        "  kubectl apply -k {}            # or -f {}/vwire.yaml",
        out.display(),
        out.display()
    );
    println!(
        "  kubectl apply -k {}/samples    # the two-client example",
        out.display()
    );
    Ok(())
}

/// Renders `deploy_dir` (the repository's `deploy/`) into `out`.
///
/// # Errors
/// As [`run`].
pub fn render(deploy_dir: &Path, image: &str, config: Option<&str>, out: &Path) -> Result<()> {
    if image.is_empty() || image.chars().any(char::is_whitespace) || image.contains('"') {
        bail!("--image {image:?} is not an image reference");
    }
    if let Some(config) = config {
        if !config.contains("[[bridge_domain]]") {
            bail!("the config has no [[bridge_domain]]; the daemon needs at least one (it may have no ports)");
        }
    }
    let base = deploy_dir.join("base");
    fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let mut all = String::new();
    for name in RESOURCES {
        let path = base.join(name);
        let mut text =
            fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        if *name == "daemonset.yaml" {
            text = set_image(&text, image)?;
        }
        if let (true, Some(config)) = (*name == "configmap.yaml", config) {
            text = set_block(&text, CONFIG_KEY, config)?;
        }
        fs::write(out.join(name), &text)?;
        if !all.is_empty() {
            all.push_str("---\n");
        }
        all.push_str(&text);
    }
    fs::copy(
        base.join("kustomization.yaml"),
        out.join("kustomization.yaml"),
    )?;
    fs::write(out.join("vwire.yaml"), all)?;
    copy_dir(&deploy_dir.join("samples"), &out.join("samples"))?;
    Ok(())
}

/// Replaces every `image: vwire` with `image: IMG`.
fn set_image(text: &str, image: &str) -> Result<String> {
    let mut n = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| match line.trim_start().strip_prefix("image: ") {
            Some(BASE_IMAGE) => {
                n += 1;
                let indent = &line[..line.len() - line.trim_start().len()];
                format!("{indent}image: {image}")
            }
            _ => line.to_owned(),
        })
        .collect();
    if n == 0 {
        bail!("no `image: {BASE_IMAGE}` in the DaemonSet");
    }
    Ok(lines.join("\n") + "\n")
}

/// Replaces the body of the literal block `  KEY: |` with `body`, indented to match.
fn set_block(text: &str, key: &str, body: &str) -> Result<String> {
    let header = format!("{key}: |");
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim() == header) else {
        bail!("no `{header}` block in the ConfigMap");
    };
    let key_indent = lines[start].len() - lines[start].trim_start().len();
    let indent = " ".repeat(key_indent + 2);
    let mut end = start + 1;
    while end < lines.len()
        && (lines[end].trim().is_empty()
            || lines[end].len() - lines[end].trim_start().len() > key_indent)
    {
        end += 1;
    }
    // Keep trailing blank lines and comments of the next key with the next key.
    while end > start + 1 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    let mut out: Vec<String> = lines[..=start].iter().map(|l| (*l).to_owned()).collect();
    out.extend(body.lines().map(|l| {
        if l.is_empty() {
            String::new()
        } else {
            format!("{indent}{l}")
        }
    }));
    out.extend(lines[end..].iter().map(|l| (*l).to_owned()));
    Ok(out.join("\n") + "\n")
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry?;
        let dst = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dst)?;
        } else {
            fs::copy(entry.path(), dst)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    const CONFIG: &str = "fdb_max_age_secs = 60\n\n[[bridge_domain]]\nname = \"blue\"\n";

    /// Renders into a directory of the test's own, so tests can run in parallel.
    fn rendered(test: &str) -> PathBuf {
        let out = std::env::temp_dir().join(format!("vwire-deploy-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&out);
        render(
            &workspace_root().join("deploy"),
            "registry.example.com/vwire:1.2.3",
            Some(CONFIG),
            &out,
        )
        .expect("render");
        out
    }

    #[test]
    fn substitutes_image_and_config() {
        let out = rendered("substitutes");
        let ds = fs::read_to_string(out.join("daemonset.yaml")).unwrap();
        assert_eq!(
            ds.matches("image: registry.example.com/vwire:1.2.3")
                .count(),
            2
        );
        assert!(!ds.contains("image: vwire\n"));
        let cm = fs::read_to_string(out.join("configmap.yaml")).unwrap();
        assert!(cm.contains("  vwire.toml: |\n    fdb_max_age_secs = 60\n\n    [[bridge_domain]]\n    name = \"blue\"\n"), "{cm}");
        // The next key survives.
        assert!(cm.contains("  vwire.conf: |"), "{cm}");
        let all = fs::read_to_string(out.join("vwire.yaml")).unwrap();
        assert_eq!(all.matches("\n---\n").count(), 2);
        assert!(out.join("samples/vlan100/client-a.yaml").exists());
        let _ = fs::remove_dir_all(out);
    }

    #[test]
    fn rejects_bad_input() {
        let out = std::env::temp_dir().join("vwire-deploy-test-bad");
        let deploy = workspace_root().join("deploy");
        assert!(render(&deploy, "has space", None, &out).is_err());
        assert!(render(&deploy, "img", Some("fdb_max_age_secs = 1\n"), &out).is_err());
    }

    /// Validates the rendered objects against the Kubernetes schemas, offline, with the
    /// `kubernetes-validate` package (`pip install kubernetes-validate`, done by setup), and
    /// renders the kustomize directories where kubectl exists.
    #[test]
    fn rendered_manifests_validate_offline() {
        let out = rendered("validate");
        let has_validator = Command::new("python3")
            .args(["-c", "import kubernetes_validate"])
            .status()
            .is_ok_and(|s| s.success());
        if has_validator {
            let mut files = vec![out.join("vwire.yaml")];
            for f in ["client-a.yaml", "client-b.yaml", "namespace.yaml"] {
                files.push(out.join("samples").join(f));
                files.push(out.join("samples/vlan100").join(f));
            }
            let res = Command::new("python3")
                .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
                .args(&files)
                .output()
                .expect("run kubernetes_validate");
            assert!(
                res.status.success(),
                "kubernetes-validate failed:\n{}{}",
                String::from_utf8_lossy(&res.stdout),
                String::from_utf8_lossy(&res.stderr)
            );
        } else {
            eprintln!("SKIPPED schema validation: python3 -m kubernetes_validate is missing (pip install kubernetes-validate)");
        }
        if Command::new("kubectl")
            .arg("version")
            .arg("--client")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            for dir in [
                out.clone(),
                out.join("samples"),
                out.join("samples/vlan100"),
            ] {
                let res = Command::new("kubectl")
                    .arg("kustomize")
                    .arg(&dir)
                    .output()
                    .expect("kubectl");
                assert!(
                    res.status.success(),
                    "kubectl kustomize {}: {}",
                    dir.display(),
                    String::from_utf8_lossy(&res.stderr)
                );
                let yaml = String::from_utf8_lossy(&res.stdout);
                if dir == out {
                    assert!(
                        yaml.contains("image: registry.example.com/vwire:1.2.3"),
                        "{yaml}"
                    );
                    assert!(yaml.contains("app.kubernetes.io/part-of: vwire"), "{yaml}");
                }
            }
        } else {
            eprintln!("SKIPPED kustomize rendering: no kubectl");
        }
        let _ = fs::remove_dir_all(out);
    }
}
