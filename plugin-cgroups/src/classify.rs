//! What a cgroup is, from its path: a Slurm job or step, an OAR job, a
//! Kubernetes pod or container, a container, a systemd service or a user
//! session. The README lists every pattern with a real path.
//!
//! The path is read from the root down; each recognised component adds
//! attributes (a container inside a pod keeps the pod's `pod_uid`, a step
//! keeps its job's `job_id`) and the deepest recognised one decides the
//! `workload`. Both cgroup drivers (systemd's `*.slice`/`*.scope` names and
//! cgroupfs' plain names) and both versions are covered.

/// The kinds of workload, the values of the `workload` attribute.
pub const WORKLOADS: [&str; 10] = [
    "slurm_job",
    "slurm_step",
    "oar_job",
    "k8s_pod",
    "k8s_container",
    "container",
    "vm",
    "systemd_service",
    "user_session",
    "other",
];

/// What a path says about its cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Classification {
    /// One of [`WORKLOADS`].
    pub workload: &'static str,
    /// `(key, value)` attributes such as `job_id`, `pod_uid`, `unit`, in a stable order.
    pub attributes: Vec<(&'static str, String)>,
}

impl Classification {
    /// Whether the path is one of the workloads people account for (anything but `other`).
    pub fn is_workload(&self) -> bool {
        self.workload != "other"
    }

    fn set(&mut self, key: &'static str, value: impl Into<String>) {
        let value = value.into();
        match self.attributes.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.attributes.push((key, value)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    None,
    /// Inside a Slurm hierarchy (v1 `/slurm`, v2 `slurmstepd.scope`).
    Slurm,
    /// Inside `kubepods`.
    Kube,
    /// Inside cgroupfs' `/oar`.
    Oar,
    /// Inside libvirt's `/machine` (cgroupfs) or machined's `machine.slice`.
    Machine,
    /// Inside a virtual machine's cgroup (its `emulator`, `vcpuN`...).
    InVm,
    /// Inside podman's cgroupfs `/libpod_parent`.
    Libpod,
}

fn strip_unit_suffix(name: &str) -> &str {
    name.strip_suffix(".slice")
        .or_else(|| name.strip_suffix(".scope"))
        .unwrap_or(name)
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A container scope: `(runtime, id)` from `docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`, or
/// a bare 64-hex id (cgroupfs driver). Conmon scopes are not containers.
fn container_of(component: &str, parent: Option<&str>) -> Option<(&'static str, String)> {
    // podman with the cgroupfs manager: `libpod-<id>` (its conmon is `conmon`).
    if let Some(id) = component
        .strip_prefix("libpod-")
        .filter(|id| is_container_id(id))
    {
        return Some(("podman", id.to_owned()));
    }
    if is_container_id(component) {
        let runtime = match parent {
            Some("docker") => "docker",
            Some(p) if p.starts_with("libpod") => "podman",
            _ => "",
        };
        return Some((runtime, component.to_owned()));
    }
    let name = component.strip_suffix(".scope")?;
    if name.starts_with("crio-conmon-") || name.starts_with("libpod-conmon-") {
        return None;
    }
    for (prefix, runtime) in [
        ("cri-containerd-", "containerd"),
        ("crio-", "crio"),
        ("docker-", "docker"),
        ("libpod-", "podman"),
        ("nerdctl-", "containerd"),
    ] {
        if let Some(id) = name.strip_prefix(prefix) {
            if is_container_id(id) {
                return Some((runtime, id.to_owned()));
            }
        }
    }
    None
}

/// A Kubernetes pod component: `(qos, uid)` from
/// `kubepods-burstable-pod<uid_>.slice`, `kubepods-pod<uid_>.slice`,
/// `kubelet-kubepods-besteffort-pod<uid_>.slice`, or cgroupfs' `pod<uid>`.
fn pod_of(component: &str, qos_from_parent: Option<&str>) -> Option<(String, String)> {
    let name = strip_unit_suffix(component);
    let (before, uid) = if let Some(uid) = name.strip_prefix("pod") {
        ("", uid)
    } else {
        let i = name.rfind("-pod")?;
        (&name[..i], &name[i + 4..])
    };
    if uid.len() < 32
        || !uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'_' || b == b'-')
    {
        return None;
    }
    let qos = before
        .rsplit('-')
        .next()
        .filter(|q| matches!(*q, "burstable" | "besteffort"))
        .or(qos_from_parent)
        .unwrap_or("guaranteed");
    Some((qos.to_owned(), uid.replace('_', "-")))
}

/// Unescapes systemd's `\xNN` in a unit name (`qemu\x2d1\x2dweb` → `qemu-1-web`).
fn unescape_unit(name: &str) -> String {
    let mut out = Vec::with_capacity(name.len());
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            let hex = name
                .get(i + 2..i + 4)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A virtual machine's cgroup: `(id, name)` from libvirt's cgroupfs
/// `qemu-<id>-<name>.libvirt-qemu` (or the older `<name>.libvirt-qemu`),
/// or machined's `machine-qemu\x2d<id>\x2d<name>.scope`.
fn vm_of(component: &str) -> Option<(Option<String>, String)> {
    let machine = match component.strip_suffix(".libvirt-qemu") {
        Some(m) => m.to_owned(),
        None => unescape_unit(component.strip_prefix("machine-")?.strip_suffix(".scope")?),
    };
    let Some(rest) = machine.strip_prefix("qemu-") else {
        // machined scopes of other kinds (`machine-<name>.scope` of nspawn)
        // are not VMs; libvirt's old names have no id.
        return component
            .ends_with(".libvirt-qemu")
            .then(|| (None, machine.clone()))
            .filter(|(_, n)| !n.is_empty());
    };
    match rest.split_once('-') {
        Some((id, name)) if all_digits(id) && !name.is_empty() => {
            Some((Some(id.to_owned()), name.to_owned()))
        }
        _ => None,
    }
}

/// Classifies a cgroup path such as `/system.slice/ssh.service`.
pub fn classify(path: &str) -> Classification {
    let mut c = Classification {
        workload: "other",
        attributes: Vec::new(),
    };
    let mut context = Context::None;
    let mut qos: Option<&str> = None;
    let mut in_pod = false;
    let mut in_step = false;
    let components: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for (i, &comp) in components.iter().enumerate() {
        let parent = i.checked_sub(1).map(|p| components[p]);
        // Slurm, v1 (`/slurm/uid_U/job_J/step_S/task_T`, `/slurm_NODE/...`)
        // and v2 (`/system.slice/[NODE_]slurmstepd.scope/job_J/step_S/user/task_T`).
        if i == 0 && (comp == "slurm" || comp.starts_with("slurm_")) {
            context = Context::Slurm;
            continue;
        }
        if comp == "slurmstepd.scope" || comp.ends_with("_slurmstepd.scope") {
            context = Context::Slurm;
            c.workload = "other";
            continue;
        }
        if context == Context::Slurm {
            if let Some(uid) = comp.strip_prefix("uid_").filter(|u| all_digits(u)) {
                c.set("uid", uid);
            } else if let Some(job) = comp.strip_prefix("job_").filter(|j| all_digits(j)) {
                c.set("job_id", job);
                c.workload = "slurm_job";
            } else if let Some(step) = comp.strip_prefix("step_").filter(|s| !s.is_empty()) {
                c.set("step", step);
                c.workload = "slurm_step";
                in_step = true;
            } else if let Some(task) = comp.strip_prefix("task_").filter(|t| all_digits(t)) {
                c.set("task", task);
            } else if comp == "system" && parent.is_some_and(|p| p.ends_with("slurmstepd.scope")) {
                // slurmstepd itself, not a job.
                c.workload = "other";
            } else if !in_step {
                c.workload = "other";
            }
            continue;
        }
        // OAR: `/oar/<user>_<job>` and `/oar.slice/.../oar-u<uid>-j<job>.slice`.
        if i == 0 && comp == "oar" {
            context = Context::Oar;
            continue;
        }
        if context == Context::Oar {
            if i == 1 {
                if let Some((user, job)) = comp
                    .rsplit_once('_')
                    .filter(|(u, j)| !u.is_empty() && all_digits(j))
                {
                    c.set("user", user);
                    c.set("job_id", job);
                    c.workload = "oar_job";
                }
            }
            continue;
        }
        if let Some(rest) = strip_unit_suffix(comp).strip_prefix("oar-u") {
            if let Some((uid, job)) = rest
                .split_once("-j")
                .filter(|(u, j)| all_digits(u) && all_digits(j))
            {
                c.set("uid", uid);
                c.set("job_id", job);
                c.workload = "oar_job";
                continue;
            }
        }
        // Virtual machines: libvirt's `/machine/qemu-1-web.libvirt-qemu`,
        // machined's `/machine.slice/machine-qemu\x2d1\x2dweb.scope`; what
        // is inside one (emulator, vCPU threads) is part of it, not a workload.
        if i == 0 && (comp == "machine" || comp == "machine.slice") {
            context = Context::Machine;
            // podman's systemd scopes live in machine.slice too: fall through.
        }
        if context == Context::InVm {
            c.workload = "other";
            continue;
        }
        if context == Context::Machine && i > 0 {
            if let Some((id, name)) = vm_of(comp) {
                if let Some(id) = id {
                    c.set("vm_id", id);
                }
                c.set("vm_name", name);
                c.workload = "vm";
                context = Context::InVm;
                continue;
            }
        }
        if i == 0 && comp == "machine" {
            continue;
        }
        // podman, cgroupfs manager: `/libpod_parent/libpod-<id>`, and a pod's
        // containers `/libpod_parent/<pod id>/libpod-<id>` (the pod is not a
        // workload of its own: its containers are).
        if i == 0 && comp == "libpod_parent" {
            context = Context::Libpod;
            continue;
        }
        if context == Context::Libpod && is_container_id(comp) && parent == Some("libpod_parent") {
            c.set("podman_pod_id", comp);
            continue;
        }
        // Kubernetes: `kubepods.slice`, `kubelet-kubepods.slice`, `/kubepods`.
        let unit_name = strip_unit_suffix(comp);
        if unit_name == "kubepods" || unit_name == "kubelet-kubepods" {
            context = Context::Kube;
            continue;
        }
        if context == Context::Kube {
            if matches!(comp, "burstable" | "besteffort") {
                qos = Some(if comp == "burstable" {
                    "burstable"
                } else {
                    "besteffort"
                });
                continue;
            }
            if !in_pod {
                if let Some((pod_qos, uid)) = pod_of(comp, qos) {
                    c.set("pod_uid", uid);
                    c.set("qos", pod_qos);
                    c.workload = "k8s_pod";
                    in_pod = true;
                }
                continue;
            }
            if let Some((runtime, id)) = container_of(comp, parent) {
                c.set("container_id", id);
                if !runtime.is_empty() {
                    c.set("runtime", runtime);
                }
                c.workload = "k8s_container";
            } else {
                // conmon scopes and anything else inside a pod.
                c.workload = "other";
            }
            continue;
        }
        // Containers outside Kubernetes.
        if let Some((runtime, id)) = container_of(comp, parent) {
            c.set("container_id", id);
            if !runtime.is_empty() {
                c.set("runtime", runtime);
            }
            c.workload = "container";
            continue;
        }
        // systemd: user slices, sessions, services.
        if let Some(uid) = comp
            .strip_prefix("user-")
            .and_then(|r| r.strip_suffix(".slice"))
            .filter(|u| all_digits(u))
        {
            c.set("uid", uid);
            continue;
        }
        if let Some(uid) = comp
            .strip_prefix("user@")
            .and_then(|r| r.strip_suffix(".service"))
            .filter(|u| all_digits(u))
        {
            c.set("uid", uid);
            c.set("unit", comp);
            c.workload = "systemd_service";
            continue;
        }
        if comp.starts_with("session-") && comp.ends_with(".scope") {
            c.set("unit", comp);
            c.workload = "user_session";
            continue;
        }
        if comp.ends_with(".service") && comp.len() > ".service".len() {
            c.set("unit", comp);
            c.workload = "systemd_service";
            continue;
        }
        c.workload = "other";
    }
    // `user` comes from an OAR path, and no lookup names OAR jobs; under
    // another manager's cgroup nested in an OAR job (a Slurm step, found by
    // fuzzing) it would collide with the `user` that the lookup adds.
    if context != Context::Oar {
        c.attributes.retain(|(k, _)| *k != "user");
    }
    // `attributes` of an `other` cgroup keep what its ancestors said (e.g.
    // the pod of a conmon scope), which is still true of it.
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(c: &Classification) -> String {
        let mut v: Vec<String> = c
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        v.sort();
        format!("{} {}", c.workload, v.join(";"))
    }

    const ID: &str = "4f9d0e07a9b5c4a5f0a8b6a1d2c3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1";
    const POD: &str = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b";

    #[test]
    fn every_documented_pattern() {
        let cases: Vec<(String, String)> = vec![
            ("/slurm/uid_1000/job_48213".into(), "slurm_job job_id=48213;uid=1000".into()),
            ("/slurm/uid_1000/job_48213/step_batch".into(), "slurm_step job_id=48213;step=batch;uid=1000".into()),
            ("/slurm/uid_1000/job_48213/step_0/task_3".into(), "slurm_step job_id=48213;step=0;task=3;uid=1000".into()),
            ("/slurm_node7/uid_0/job_1/step_extern".into(), "slurm_step job_id=1;step=extern;uid=0".into()),
            ("/system.slice/slurmstepd.scope/job_48213".into(), "slurm_job job_id=48213".into()),
            ("/system.slice/slurmstepd.scope/job_48213/step_interactive/user/task_0".into(), "slurm_step job_id=48213;step=interactive;task=0".into()),
            ("/system.slice/slurmstepd.scope/job_48213/step_0/slurm".into(), "slurm_step job_id=48213;step=0".into()),
            ("/system.slice/node7_slurmstepd.scope/job_5/step_1".into(), "slurm_step job_id=5;step=1".into()),
            ("/system.slice/slurmstepd.scope/system".into(), "other ".into()),
            ("/system.slice/slurmstepd.scope".into(), "other ".into()),
            ("/oar/alice_4242".into(), "oar_job job_id=4242;user=alice".into()),
            ("/oar.slice/oar-u1000.slice/oar-u1000-j4242.slice".into(), "oar_job job_id=4242;uid=1000".into()),
            ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d3c5c1e_5a4b_4d6f_9c1e_1f2a3b4c5d6e.slice".into(), "k8s_pod pod_uid=0d3c5c1e-5a4b-4d6f-9c1e-1f2a3b4c5d6e;qos=burstable".into()),
            (format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0d3c5c1e_5a4b_4d6f_9c1e_1f2a3b4c5d6e.slice/cri-containerd-{ID}.scope"), format!("k8s_container container_id={ID};pod_uid=0d3c5c1e-5a4b-4d6f-9c1e-1f2a3b4c5d6e;qos=besteffort;runtime=containerd")),
            (format!("/kubepods.slice/kubepods-pod0d3c5c1e_5a4b_4d6f_9c1e_1f2a3b4c5d6e.slice/crio-{ID}.scope"), format!("k8s_container container_id={ID};pod_uid=0d3c5c1e-5a4b-4d6f-9c1e-1f2a3b4c5d6e;qos=guaranteed;runtime=crio")),
            (format!("/kubepods.slice/kubepods-pod0d3c5c1e_5a4b_4d6f_9c1e_1f2a3b4c5d6e.slice/crio-conmon-{ID}.scope"), "other pod_uid=0d3c5c1e-5a4b-4d6f-9c1e-1f2a3b4c5d6e;qos=guaranteed".into()),
            (format!("/kubepods/burstable/pod0d3c5c1e-5a4b-4d6f-9c1e-1f2a3b4c5d6e/{ID}"), format!("k8s_container container_id={ID};pod_uid=0d3c5c1e-5a4b-4d6f-9c1e-1f2a3b4c5d6e;qos=burstable")),
            ("/kubepods/pod0d3c5c1e-5a4b-4d6f-9c1e-1f2a3b4c5d6e".into(), "k8s_pod pod_uid=0d3c5c1e-5a4b-4d6f-9c1e-1f2a3b4c5d6e;qos=guaranteed".into()),
            (format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod0d3c5c1e_5a4b_4d6f_9c1e_1f2a3b4c5d6e.slice/cri-containerd-{ID}.scope"), format!("k8s_container container_id={ID};pod_uid=0d3c5c1e-5a4b-4d6f-9c1e-1f2a3b4c5d6e;qos=besteffort;runtime=containerd")),
            (format!("/system.slice/docker-{ID}.scope"), format!("container container_id={ID};runtime=docker")),
            (format!("/docker/{ID}"), format!("container container_id={ID};runtime=docker")),
            (format!("/machine.slice/libpod-{ID}.scope"), format!("container container_id={ID};runtime=podman")),
            (format!("/machine.slice/libpod-conmon-{ID}.scope"), "other ".into()),
            (format!("/libpod_parent/libpod-{ID}"), format!("container container_id={ID};runtime=podman")),
            (format!("/libpod_parent/{POD}/libpod-{ID}"), format!("container container_id={ID};podman_pod_id={POD};runtime=podman")),
            (format!("/libpod_parent/{POD}"), format!("other podman_pod_id={POD}")),
            ("/libpod_parent/conmon".into(), "other ".into()),
            ("/machine/qemu-1-probe-vm.libvirt-qemu".into(), "vm vm_id=1;vm_name=probe-vm".into()),
            ("/machine/qemu-12-web.libvirt-qemu/emulator".into(), "other vm_id=12;vm_name=web".into()),
            ("/machine/qemu-12-web.libvirt-qemu/libvirt/vcpu0".into(), "other vm_id=12;vm_name=web".into()),
            ("/machine/web.libvirt-qemu".into(), "vm vm_name=web".into()),
            ("/machine.slice/machine-qemu\\x2d3\\x2dprobe\\x2dvm.scope".into(), "vm vm_id=3;vm_name=probe-vm".into()),
            ("/machine.slice/machine-qemu\\x2d3\\x2dprobe\\x2dvm.scope/libvirt/vcpu1".into(), "other vm_id=3;vm_name=probe-vm".into()),
            ("/machine.slice/machine-ubuntu.scope".into(), "other ".into()),
            ("/machine".into(), "other ".into()),
            ("/system.slice/ssh.service".into(), "systemd_service unit=ssh.service".into()),
            ("/user.slice/user-1000.slice/session-3.scope".into(), "user_session uid=1000;unit=session-3.scope".into()),
            ("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service".into(), "systemd_service uid=1000;unit=foo.service".into()),
            ("/system.slice".into(), "other ".into()),
            ("/".into(), "other ".into()),
            ("/init.scope".into(), "other ".into()),
        ];
        for (path, want) in cases {
            assert_eq!(attrs(&classify(&path)), want, "{path}");
        }
    }

    #[test]
    fn odd_paths_do_not_panic() {
        for p in [
            "",
            "//",
            "/slurm",
            "/oar",
            "/kubepods.slice/kubepods-pod.slice",
            "/a/.service",
            "/user-.slice",
            "/\u{e9}/x.service",
            "/machine/qemu-.libvirt-qemu",
            "/machine.slice/machine-qemu\\x2.scope",
            "/machine.slice/machine-\\xzz.scope",
            "/libpod_parent/libpod-",
        ] {
            let _ = classify(p);
        }
    }

    #[test]
    fn an_oar_user_does_not_follow_into_another_managers_cgroup() {
        let c = classify("/oar/alice_42/system.slice/slurmstepd.scope/job_5/step_0");
        assert_eq!(attrs(&c), "slurm_step job_id=5;step=0");
        assert_eq!(
            attrs(&classify("/oar/alice_42/x")),
            "oar_job job_id=42;user=alice"
        );
    }

    #[test]
    fn no_attribute_of_a_path_is_a_name_key() {
        // Outputs find a series' earlier points by leaving the names out
        // (alumet_workloads::names): a path's attribute with a name's key
        // would be left out too. (OAR's `user` comes from its path, and OAR
        // jobs are named by no lookup.)
        let paths = [
            "/slurm/uid_1000/job_48213/step_batch/task_0",
            "/system.slice/slurmstepd.scope/job_48213/step_0/user/task_1",
            "/oar/alice_4242",
            "/oar.slice/oar-u1000.slice/oar-u1000-j4242.slice",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d3c5c1e_5a4b_4d6f_9c1e_1f2a3b4c5d6e.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope",
            "/kubepods/besteffort/pod0d3c5c1e-5a4b-4d6f-9c1e-1f2a3b4c5d6e/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope",
            "/libpod_parent/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef/libpod-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "/machine/qemu-1-web.libvirt-qemu",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
            "/user.slice/user-1000.slice/session-3.scope",
        ];
        for path in paths {
            for (key, _) in classify(path).attributes {
                assert!(
                    key == "user" || !alumet_workloads::names::is_name_key(key),
                    "{path}: {key}"
                );
            }
        }
    }
}
