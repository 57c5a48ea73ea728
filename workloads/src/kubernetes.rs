//! This node's pods, from the Kubernetes API server or the kubelet.
//! (Being written: see the crate's issue notes.)
