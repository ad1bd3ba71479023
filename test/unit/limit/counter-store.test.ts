// The memory counter store against the counter-store contract.
import { counterStoreContract } from '../../helpers/counter-store-contract.js';
import { MemoryCounterStore } from '../../../src/limit/counter-store.js';

counterStoreContract(async (rules) => new MemoryCounterStore(rules));
