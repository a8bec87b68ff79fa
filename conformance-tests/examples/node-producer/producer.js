// Hand a stored Conveyor job to RabbitMQ from Node.js, as the AMQP binding says (spec.md#amqp).
//
// Usage: node producer.js AMQP_URL PREFIX QUEUE BAND JOB_ID PRIORITY
//
// The job is already stored (AMQP-006: a message never creates a job); this wakes the
// consumers of its job queue. It publishes the envelope (BROKER-006) to the default exchange
// with the job queue's name as routing key, `mandatory`, and waits for the broker's confirm
// (AMQP-001); the queue is named <prefix><queue>.p<band> (AMQP-002) and declared durable with
// the deployment's arguments, quorum by default (AMQP-003); the properties are those of
// AMQP-004. Exits 0 once confirmed, 1 when the broker returned or refused the message.
import amqp from "amqplib";

const [url, prefix, queue, band, jobId, priority] = process.argv.slice(2);
const name = `${prefix}${queue}.p${band}`;
const envelope = {
  specversion: "0.2",
  job_id: jobId,
  queue,
  priority: Number(priority),
  published_at: new Date().toISOString(), // RFC 3339, UTC, three fractional digits (TIME-003)
};

const connection = await amqp.connect(url);
try {
  const channel = await connection.createConfirmChannel();
  await channel.assertQueue(name, { durable: true, arguments: { "x-queue-type": "quorum" } });
  let returned = false;
  channel.on("return", () => { returned = true; });
  await new Promise((resolve, reject) => {
    channel.publish("", name, Buffer.from(JSON.stringify(envelope)), {
      mandatory: true,
      persistent: true, // delivery_mode 2
      contentType: "application/json",
      type: "conveyor.job",
      messageId: jobId,
    }, (error) => (error ? reject(error) : resolve()));
  });
  if (returned) {
    console.error(`the broker returned the message: no queue ${name}`);
    process.exitCode = 1;
  } else {
    console.log(`handed job ${jobId} to ${name}`);
  }
  await channel.close();
} finally {
  await connection.close();
}
