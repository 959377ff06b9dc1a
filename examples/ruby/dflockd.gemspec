# frozen_string_literal: true

# The dflockd gem: pure Ruby over the ffi gem, no native extension. It loads
# the installed libdflockd (`make release && make install`, or a distribution
# package) at require time; see README.md for the search order.
#
# The platform gem (dflockd-X.Y.Z-x86_64-linux.gem, `make gem` at the
# repository root) is the same gem built from a copy of this directory with
# make dist's glibc-2.17 libdflockd.so.0 in vendor/: it carries the library
# and loads it (lib/dflockd/native.rb), so it needs nothing installed.
#
# The version is the library's (the repository's Cargo.toml): gem X.Y.Z is
# written against libdflockd X.Y.Z. Build it from this directory:
#   gem build dflockd.gemspec
cargo_toml = File.expand_path("../../Cargo.toml", __dir__)
version = File.read(cargo_toml)[/^version = "([^"]+)"/, 1] or raise "no version in #{cargo_toml}"

bundled = File.file?(File.join(__dir__, "vendor", "libdflockd.so.0"))

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
  if bundled
    # Linux x86-64, glibc >= 2.17 (RubyGems tells x86_64-linux-musl apart).
    s.platform = "x86_64-linux"
    s.files += ["vendor/libdflockd.so.0"]
    s.description = s.description.sub("install libdflockd.so.0 first", "this platform gem carries libdflockd.so.0")
  else
    s.requirements = ["libdflockd.so.0 (libdflockd #{version}), or DFLOCKD_LIB naming the library"]
  end
  s.add_dependency "ffi", "~> 1.15"
end
