/** Error type of the data layer: bad paths, empty inputs, malformed token files. */
export class DataError extends Error {
  /** Creates a data error with a message meant for the person running the program. */
  constructor(message: string) {
    super(message);
    this.name = "DataError";
  }
}
