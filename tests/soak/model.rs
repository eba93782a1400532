//! The AppBundles of the soak: a seeded random generator, each AppBundle's spec as a small model,
//! and the random valid changes made to it.

use serde_json::{Value, json};

/// A small seeded generator (SplitMix64): the same seed gives the same soak.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }
}

/// The ConfigMap every AppBundle that follows its configuration reads (one per namespace).
pub const CONFIG: &str = "soak-config";

/// One AppBundle's spec, as the soak varies it.
#[derive(Clone, Debug)]
pub struct Model {
    pub image: &'static str,
    /// None with autoscaling (the autoscaler sets the pods).
    pub replicas: Option<i32>,
    /// Also a second, named port.
    pub two_ports: bool,
    pub env: Vec<(String, String)>,
    pub service_type: &'static str,
    pub disruption_budget: bool,
    pub autoscaling: bool,
    pub sidecar: bool,
    pub init_container: bool,
    /// envFrom the namespace's ConfigMap, with rolloutOnConfigChange.
    pub follows_config: bool,
    /// The number of the last change, carried in the pods' env (SOAK_CHANGE) so that a watch of
    /// the Deployments can tell when each change reached its child.
    pub change: u64,
}

const IMAGES: [&str; 4] = ["nginx:1.25", "nginx:1.26", "nginx:1.27", "nginx:1.29"];
const SERVICE_TYPES: [&str; 2] = ["ClusterIP", "NodePort"];

impl Model {
    pub fn random(rng: &mut Rng) -> Model {
        let autoscaling = rng.chance(15);
        Model {
            image: rng.pick(&IMAGES),
            replicas: (!autoscaling).then(|| rng.below(4) as i32),
            two_ports: rng.chance(30),
            env: (0..rng.below(3))
                .map(|i| (format!("VAR_{i}"), format!("v{}", rng.below(100))))
                .collect(),
            service_type: rng.pick(&SERVICE_TYPES),
            disruption_budget: rng.chance(25),
            autoscaling,
            sidecar: rng.chance(20),
            init_container: rng.chance(15),
            follows_config: rng.chance(20),
            change: 0,
        }
    }

    /// The AppBundle, as `kubectl apply --server-side` (or a GitOps tool) would send it.
    pub fn manifest(&self, name: &str) -> Value {
        let mut ports = vec![json!({"name": "http", "containerPort": 80})];
        if self.two_ports {
            ports.push(json!({"name": "admin", "containerPort": 8080}));
        }
        let mut env: Vec<Value> = self
            .env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        env.push(json!({"name": "SOAK_CHANGE", "value": self.change.to_string()}));
        let mut spec = json!({
            "image": self.image,
            "ports": ports,
            "env": env,
            "service": {"type": self.service_type},
        });
        if let Some(r) = self.replicas {
            spec["replicas"] = json!(r);
        }
        if self.autoscaling {
            spec["autoscaling"] = json!({"minReplicas": 1, "maxReplicas": 3});
            spec["resources"] = json!({"requests": {"cpu": "50m"}});
        }
        if self.disruption_budget {
            spec["disruptionBudget"] = json!({"maxUnavailable": 1});
        }
        if self.sidecar {
            spec["sidecars"] = json!([{"name": "log", "image": "busybox:1.37"}]);
        }
        if self.init_container {
            spec["initContainers"] = json!([{"name": "prepare", "image": "busybox:1.37"}]);
        }
        if self.follows_config {
            spec["envFrom"] = json!([{"configMapRef": {"name": CONFIG}}]);
            spec["rolloutOnConfigChange"] = json!(true);
        }
        json!({
            "apiVersion": "kubundle.dev/v1alpha1",
            "kind": "AppBundle",
            "metadata": {"name": name},
            "spec": spec,
        })
    }

    /// One random valid change to the spec (numbered `change`); what it was, for the log.
    pub fn mutate(&mut self, rng: &mut Rng, change: u64) -> &'static str {
        self.change = change;
        match rng.below(10) {
            0 | 1 => {
                self.image = rng.pick(&IMAGES);
                "image"
            }
            2 if !self.autoscaling => {
                self.replicas = Some(rng.below(4) as i32);
                "replicas"
            }
            3 => {
                self.two_ports = !self.two_ports;
                "ports"
            }
            4 => {
                if self.env.is_empty() || rng.chance(50) {
                    let i = self.env.len();
                    self.env
                        .push((format!("VAR_{i}"), format!("v{}", rng.below(100))));
                } else {
                    self.env.pop();
                }
                "env"
            }
            5 => {
                self.service_type = rng.pick(&SERVICE_TYPES);
                "service type"
            }
            6 => {
                self.disruption_budget = !self.disruption_budget;
                "disruption budget"
            }
            7 => {
                // The CRD refuses spec.replicas beside spec.autoscaling; the autoscaler takes
                // the pods over (or gives them back) without a dip.
                self.autoscaling = !self.autoscaling;
                self.replicas = (!self.autoscaling).then(|| 1 + rng.below(3) as i32);
                "autoscaling"
            }
            8 => {
                if rng.chance(50) {
                    self.sidecar = !self.sidecar;
                    "sidecar"
                } else {
                    self.init_container = !self.init_container;
                    "init container"
                }
            }
            _ => {
                self.follows_config = !self.follows_config;
                "config following"
            }
        }
    }
}
