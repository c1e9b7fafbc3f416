//! `palisade-jail-launcher`: builds one jail and watches it. Started by
//! `palisade_jail::spawn`, never by hand; see `palisade_jail::launcher` for the protocol.

fn main() {
    palisade_jail::launcher::main()
}
