// A short program against the client generated from Tally's OpenAPI document: `tsc` must accept
// it, so the document's success bodies (the envelope), request bodies and operations are what a
// TypeScript caller can build on. It is type-checked, not run.
import createClient from "openapi-fetch";
import type { components, paths } from "./tally";

type ErrorEnvelope = components["schemas"]["ErrorEnvelope"];

export async function example(baseUrl: string, userToken: string, serviceKey: string) {
  const user = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${userToken}` } });
  const service = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${serviceKey}` } });

  const balance = await user.GET("/credits/balance");
  if (balance.data) {
    const available: number = balance.data.data.available;
    const soonest: string | undefined = balance.data.data.expiring[0]?.expires_at;
    console.log(available, soonest);
  } else if (balance.error) {
    const code: ErrorEnvelope["error"]["code"] = balance.error.error.code;
    console.log(code);
  }

  const consumed = await service.POST("/internal/credits/consume", {
    body: {
      user_id: "alice",
      amount: 3,
      description: "AI chat completion",
      idempotency_key: "req-1",
      metadata: { model: "gpt-4o" },
    },
  });
  if (consumed.data) {
    const after: number = consumed.data.data.balance_after;
    console.log(after);
  } else if (consumed.error?.error.code === "INSUFFICIENT_CREDITS") {
    console.log(consumed.error.error.details);
  }

  const session = await user.POST("/payment/create-session", {
    body: {
      channel: "stripe",
      type: "subscription",
      plan_id: "pro",
      interval: "month",
      success_url: "https://app.example.com/billing/done",
    },
  });
  if (session.data) {
    const url: string = session.data.data.url;
    const order: string = session.data.data.order_id;
    console.log(url, order);
  }
}
