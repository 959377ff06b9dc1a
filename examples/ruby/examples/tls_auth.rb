# frozen_string_literal: true

# TLS + auth: the embedded server (or DFLOCKD_SERVERS with DFLOCKD_TLS_CA and
# DFLOCKD_AUTH_TOKEN) over TLS with a shared secret; a wrong secret raises
# DFlockd::AuthError.
require_relative "example_env"

ExampleEnv.run(tls_auth: true) do |client, server|
  client.lock("rb-example-tls", timeout: 10) do |lock|
    puts "acquired over TLS with auth, fence #{lock.fence}"
  end
  next unless server # an external server: its wrong-token behaviour is not ours to show

  bad = DFlockd::Client.new(servers: server.addr, auth_token: "wrong",
                            tls_ca_file: File.join(ExampleEnv::TLS_DIR, "ca.pem"))
  begin
    bad.lock("rb-example-tls", timeout: 1) { puts "unexpected: acquired with a wrong token" }
    exit 1
  rescue DFlockd::AuthError => e
    puts "wrong token: #{e.class}: #{e.message}"
  ensure
    bad.close
  end
end
