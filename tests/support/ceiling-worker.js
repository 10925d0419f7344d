// The benchmark's ceiling: a JavaScript module worker that forwards every request to the fake
// Databricks with one loopback fetch and returns its answer untouched (streams included). It
// runs under the same workerd and Miniflare as the gateway, so its row is what the platform
// itself can do on this machine; the gateway's rows are read against it.

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    return fetch(`${env.UPSTREAM}${url.pathname}${url.search}`, {
      method: request.method,
      headers: request.headers,
      body: request.body,
    });
  },
};
