/**
 * Runs every clean-up step even when one fails (a daemon that will not stop
 * must not leave its namespace behind), then fails with every problem.
 */
export async function cleanUp(steps: ReadonlyArray<() => unknown>): Promise<void> {
  const problems: unknown[] = [];
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      problems.push(err);
    }
  }
  if (problems.length > 0) throw new AggregateError(problems, 'cleanup failed');
}
