//! `kubectl-kubundle`: the kubectl plugin (`kubectl kubundle status|history|rollback`). Install
//! it by copying it onto PATH. See [`kubundle::plugin`].

fn main() {
    kubundle::plugin::main();
}
