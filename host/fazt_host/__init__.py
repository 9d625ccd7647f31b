"""fazt-host: small JavaScript apps in WebAssembly sandboxes, one SQLite cartridge."""

__version__ = "0.1.0"
