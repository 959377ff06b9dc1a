# frozen_string_literal: true

# The dflockd gem: pure Ruby over the ffi gem, no native extension. It loads
# the installed libdflockd (`make release && make install`, or a distribution
# package) at require time; see README.md for the search order.
#
# The version is the library's (the repository's Cargo.toml): gem X.Y.Z is
# written against libdflockd X.Y.Z. Build it from this directory:
#   gem build dflockd.gemspec
cargo_toml = File.expand_path("../../Cargo.toml", __dir__)
version = File.read(cargo_toml)[/^version = "([^"]+)"/, 1] or raise "no version in #{cargo_toml}"

Gem::Specification.new do |s|
  s.name = "dflockd"
  s.version = version
  s.summary = "Client for the dflockd distributed lock server (over libdflockd)"
  s.description = "Locks and counting semaphores with leases renewed in the background, fencing tokens, " \
                  "TLS and auth, through the libdflockd C library (loaded with the ffi gem; install " \
                  "libdflockd.so.0 first)."
  s.authors = ["libdflockd contributors"]
  s.licenses = ["MIT", "Apache-2.0"] # either, at your option (Cargo.toml: MIT OR Apache-2.0)
  s.homepage = "https://github.com/dflockd/libdflockd"
  s.metadata = { "source_code_uri" => "https://github.com/dflockd/libdflockd/tree/main/examples/ruby" }
  s.required_ruby_version = ">= 3.1"
  s.files = Dir.chdir(__dir__) { Dir["lib/**/*.rb"].sort + ["README.md"] }
  s.require_paths = ["lib"]
  s.requirements = ["libdflockd.so.0 (libdflockd #{version}), or DFLOCKD_LIB naming the library"]
  s.add_dependency "ffi", "~> 1.15"
end
