# frozen_string_literal: true

# Shared setup for the examples: a client of DFLOCKD_SERVERS ("host:port,..."),
# DFLOCKD_AUTH_TOKEN and DFLOCKD_TLS_CA, or, when DFLOCKD_SERVERS is unset, of
# the library's embedded test server (TLS + auth with the test certificate
# when asked for).
require "dflockd"

module ExampleEnv
  TLS_DIR = File.expand_path("../../../tests/fixtures/tls", __dir__)
  AUTH_TOKEN = "example-secret"

  # Yields [client, server]; server is nil for DFLOCKD_SERVERS.
  def self.run(tls_auth: false, embedded: false, **client_opts)
    servers = ENV.fetch("DFLOCKD_SERVERS", "")
    if servers.empty? || embedded
      server_opts = {}
      if tls_auth
        server_opts = { auth_token: AUTH_TOKEN, tls_cert_file: File.join(TLS_DIR, "server.pem"),
                        tls_key_file: File.join(TLS_DIR, "server.key") }
        client_opts = client_opts.merge(auth_token: AUTH_TOKEN, tls_ca_file: File.join(TLS_DIR, "ca.pem"))
      end
      server = DFlockd::TestServer.start(**server_opts)
      puts "started the embedded dflockd test server on #{server.addr}"
      servers = server.addr
    else
      client_opts = client_opts.merge(auth_token: ENV["DFLOCKD_AUTH_TOKEN"]) if ENV["DFLOCKD_AUTH_TOKEN"].to_s != ""
      client_opts = client_opts.merge(tls_ca_file: ENV["DFLOCKD_TLS_CA"]) if ENV["DFLOCKD_TLS_CA"].to_s != ""
    end
    client = DFlockd::Client.new(servers: servers, **client_opts)
    yield client, server
  ensure
    client&.close
    server&.stop
  end
end
